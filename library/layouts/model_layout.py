"""Which modules a base has, with their weight shapes, and how kohya's flattened names map onto them.

kohya writes ``lora_unet_down_blocks_0_attentions_0_proj_in``: the dots of the
module path became underscores, which cannot be undone by rule (``to_q``,
``proj_in``, ``time_emb_proj`` hold underscores of their own). A layout knows
every real module path of a base, so it flattens each one (and, for the UNet,
its original-SD name) and looks the flattened name up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from torch import nn

from library.layouts.configs import BASE_CONFIGS
from library.layouts.ldm_names import ldm_unet_name


@dataclass(frozen=True)
class ModuleShape:
    """A linear or conv weight: out and in features, conv kernel size (None for linear)."""

    out_features: int
    in_features: int
    kernel: tuple[int, int] | None = None

    @property
    def is_conv(self) -> bool:
        return self.kernel is not None


def flatten(path: str) -> str:
    return path.replace(".", "_")


@dataclass
class ModelLayout:
    """Module paths and shapes of one base, per component (``unet``, ``text_encoder``, ...)."""

    name: str
    modules: dict[str, dict[str, ModuleShape]]
    flat_index: dict[str, dict[str, str]] = field(default_factory=dict)
    conventional: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.flat_index:
            self.flat_index = {component: _flat_index(paths) for component, paths in self.modules.items()}

    def add_aliases(self, component: str, aliases: Mapping[str, str]) -> None:
        """Extra dotted names (e.g. original-SD names) for module paths of ``component``."""
        index = self.flat_index.setdefault(component, {})
        for alias, path in aliases.items():
            key = flatten(alias)
            if index.get(key, path) != path:
                index[key] = ""  # ambiguous: resolve nothing rather than guess
            else:
                index[key] = path

    def conventional_name(self, component: str, path: str) -> str:
        """The name other tools expect for a module (original-SD names for SDXL's UNet, ``text_model.``
        before CLIP text encoder paths), or ``path`` itself."""
        return self.conventional.get(component, {}).get(path, path)

    def resolve(self, component: str, flat_name: str) -> str | None:
        """The module path whose flattened (diffusers or original-SD) name is ``flat_name``."""
        path = self.flat_index.get(component, {}).get(flat_name)
        return path or None

    def shape(self, component: str, path: str) -> ModuleShape | None:
        return self.modules.get(component, {}).get(path)


def _flat_index(paths: Mapping[str, ModuleShape]) -> dict[str, str]:
    index: dict[str, str] = {}
    for path in paths:
        key = flatten(path)
        index[key] = "" if key in index else path
    return index


def module_shapes(model: nn.Module) -> dict[str, ModuleShape]:
    """Every linear/conv module of ``model`` (PEFT-wrapped layers are seen through)."""
    shapes: dict[str, ModuleShape] = {}
    for path, module in model.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, nn.Linear):
            shapes[path] = ModuleShape(base.out_features, base.in_features)
        elif isinstance(base, nn.Conv2d):
            kernel = base.kernel_size
            shapes[path] = ModuleShape(base.out_channels, base.in_channels // base.groups, (kernel[0], kernel[1]))
    return {path: shape for path, shape in shapes.items() if ".base_layer" not in path and ".lora_" not in path}


def layout_from_components(name: str, components: Mapping[str, nn.Module | None],
                           unet_config: Mapping[str, Any] | None = None,
                           original_sd_names: bool = False) -> ModelLayout:
    """A layout of a loaded model ({"unet": pipe.unet, "text_encoder": ...}). Original-SD UNet names are
    recognised when the UNet config is known (taken from ``components["unet"].config`` when not given);
    ``original_sd_names`` makes them the conventional names written for the UNet (as kohya does for SDXL)."""
    modules = {component: module_shapes(model) for component, model in components.items() if model is not None}
    layout = ModelLayout(name=name, modules=modules)
    unet = components.get("unet")
    config = unet_config if unet_config is not None else getattr(unet, "config", None)
    if "unet" in modules and config is not None and "down_block_types" in config:
        aliases = {ldm: path for path in modules["unet"] if (ldm := ldm_unet_name(path, config)) is not None}
        layout.add_aliases("unet", aliases)
        if original_sd_names:
            layout.conventional["unet"] = {path: ldm for ldm, path in aliases.items()}
    for component, model in components.items():
        if component != "unet" and model is not None and type(model).__name__.startswith("CLIPText"):
            # transformers 5 dropped CLIPTextModel's ``text_model.`` level; files written before keep it
            bare = [path for path in modules[component] if not path.startswith("text_model.")
                    and path != "text_projection"]
            layout.add_aliases(component, {f"text_model.{path}": path for path in bare})
            layout.conventional[component] = {path: f"text_model.{path}" for path in bare}
    return layout


def _empty_text_encoder(class_name: str, config: Mapping[str, Any]) -> nn.Module:
    import transformers

    config_class = transformers.BertConfig if class_name.startswith("Bert") else transformers.CLIPTextConfig
    model_class = getattr(transformers, class_name)
    if class_name == "BertModel":
        return model_class(config_class(**config), add_pooling_layer=False)
    return model_class(config_class(**config))


def _decoded(document: Mapping[str, Any]) -> ModelLayout:
    modules = {component: {path: ModuleShape(out, inp, (kernel[0], kernel[1]) if kernel else None)
                           for path, out, inp, kernel in rows} for component, rows in document["modules"].items()}
    return ModelLayout(name=document["name"], modules=modules, flat_index=document["flat_index"],
                       conventional=document["conventional"])


@cache
def built_in_layout(base: str) -> ModelLayout:
    """The layout of a built-in base (``sd1``, ``sd2``, ``sdxl``, ``toy``), built on the meta device once and
    then read from the layout cache (library/layouts/cache.py)."""
    from library.layouts import cache as layout_cache

    path = layout_cache.cache_path(base, BASE_CONFIGS[base])
    document = layout_cache.read(path)
    if document is not None:
        try:
            return _decoded(document)
        except (KeyError, TypeError, ValueError):
            pass
    layout = _build_layout(base)
    layout_cache.write(path, layout_cache.encode(layout))
    return layout


def _build_layout(base: str) -> ModelLayout:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers.utils import logging as transformers_logging

    unet_config, encoders = BASE_CONFIGS[base]
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with init_empty_weights():
            components: dict[str, nn.Module] = {"unet": UNet2DConditionModel.from_config(dict(unet_config))}
            for component, (class_name, config) in encoders.items():
                components[component] = _empty_text_encoder(class_name, config)
    finally:
        transformers_logging.set_verbosity(verbosity)
    return layout_from_components(base, components, unet_config, original_sd_names=base == "sdxl")


def known_layouts() -> tuple[ModelLayout, ...]:
    """Every built-in base layout, in the order ties are broken (sd1, sdxl, sd2, toy)."""
    return tuple(built_in_layout(base) for base in ("sd1", "sdxl", "sd2", "toy"))
