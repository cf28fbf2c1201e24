"""cloneofsimo/lora "safeloras": ``unet:<i>:down``, ``unet:<i>:up``, ``text_encoder:<i>:down``/``up``.

Modules are numbered, not named: the header metadata lists the classes LoRA was injected under
(``"unet": '["GEGLU", "CrossAttention", "Attention"]'``, ``"text_encoder": '["CLIPAttention"]'``) and
``<i>`` counts the ``nn.Linear`` children of those classes in the order cloneofsimo's ``_find_modules``
walks them: ``model.modules()`` (registration order: down_blocks, up_blocks, then mid_block), each
ancestor's ``named_modules()`` inside. In the diffusers it was written for, a transformer block registered
``attn1``, ``ff`` (its GEGLU ``proj``), then ``attn2``; later diffusers register ``ff`` last. Both orders are
tried against the base layouts (SD 1.x and 2.x; CLIP's attention registers k, v, q, out) and the one whose
every shape fits wins; when none does, the file is refused naming the format. ``up`` holds the scale
already (``realize_as_lora``): alpha = rank. Tokens embedded beside (``"<s1>": "<embed>"``) are
textual-inversion vectors (library/families/embedding.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from library.errors import AdapterFileError
from library.families import plan_module
from library.families.lora import DOWN, UP
from library.formats.header import SafetensorsHeader
from library.formats.plan import PlannedModule
from library.layouts.model_layout import ModelLayout

FORMAT = "cloneofsimo"
KEY = re.compile(r"^(unet|text_encoder):(\d+):(up|down)$")
DEFAULT_CLASSES = {"unet": ("CrossAttention", "Attention", "GEGLU"), "text_encoder": ("CLIPAttention",)}
_BLOCK = re.compile(r"^(.*\.transformer_blocks\.\d+)\.(attn1|attn2|ff)\.(.+)$")
_ENCODER_LAYER = re.compile(r"^(.*layers\.\d+)\.(self_attn|mlp)\.(.+)$")
_UNET_CLASSES = {"CrossAttention": ("attn1", "attn2"), "Attention": ("attn1", "attn2"), "GEGLU": ("ff",),
                 "FeedForward": ("ff",)}
_TEXT_CLASSES = {"CLIPAttention": ("self_attn",), "CLIPMLP": ("mlp",)}
BLOCK_ORDERS: tuple[tuple[str, ...], ...] = (("attn1", "ff", "attn2"), ("attn1", "attn2", "ff"))


def claims(keys: Sequence[str]) -> bool:
    return any(KEY.match(key) for key in keys)


def _classes(file_name: str, metadata: Mapping[str, str], component: str) -> tuple[str, ...]:
    raw = metadata.get(component)
    if not raw:
        return DEFAULT_CLASSES[component]
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AdapterFileError(f"{file_name}: cloneofsimo/lora file whose {component!r} metadata is not a list of "
                               "class names")
    return tuple(value)


def _unet_order(layout: ModelLayout, classes: Sequence[str], order: Sequence[str]) -> list[str]:
    parts = {part for name in classes for part in _UNET_CLASSES.get(name, ())}
    blocks: dict[str, dict[str, list[str]]] = {}
    for path in layout.modules.get("unet", {}):
        match = _BLOCK.match(path)
        if match is None or match.group(2) not in parts:
            continue
        block, part, tail = match.groups()
        if part == "ff" and "FeedForward" not in classes and tail != "net.0.proj":
            continue  # GEGLU holds only net.0.proj
        blocks.setdefault(block, {}).setdefault(part, []).append(path)
    return [path for children in blocks.values() for part in order for path in children.get(part, [])]


def _text_order(layout: ModelLayout, classes: Sequence[str]) -> list[str]:
    parts = {part for name in classes for part in _TEXT_CLASSES.get(name, ())}
    return [path for path in layout.modules.get("text_encoder", {})
            if (match := _ENCODER_LAYER.match(path)) is not None and match.group(2) in parts]


def _fits(layout: ModelLayout, component: str, paths: Sequence[str], shapes: Mapping[int, tuple]) -> bool:
    if len(paths) != len(shapes) or sorted(shapes) != list(range(len(paths))):
        return False
    for index, path in enumerate(paths):
        expected = layout.shape(component, path)
        down, up = shapes[index]
        if expected is None or expected.kernel is not None or (expected.in_features, expected.out_features) != (
                down[1], up[0]):
            return False
    return True


def plan(file_name: str, header: SafetensorsHeader, layouts: Sequence[ModelLayout],
         hints: Sequence[str]) -> tuple[list[PlannedModule], str]:
    """The modules of a cloneofsimo file and the name of the base layout that fitted it."""
    keys: dict[str, dict[int, dict[str, str]]] = {}
    for key in header.tensors:
        match = KEY.match(key)
        if match is not None:
            component, index, part = match.groups()
            keys.setdefault(component, {}).setdefault(int(index), {})[part] = key
    ranked = sorted(layouts, key=lambda layout: (layout.name not in hints, layout.name not in ("sd1", "sd2")))
    for layout in ranked:
        paths_of: dict[str, list[str]] = {}
        for component, numbered in keys.items():
            incomplete = [i for i, parts in numbered.items() if set(parts) != {"up", "down"}]
            if incomplete:
                raise AdapterFileError(f"{file_name}: cloneofsimo/lora module {component}:{incomplete[0]} has no "
                                       f"{'up' if 'up' not in numbered[incomplete[0]] else 'down'} weight")
            shapes = {i: (header.tensors[p["down"]].shape, header.tensors[p["up"]].shape) for i, p in numbered.items()}
            classes = _classes(file_name, header.metadata, component)
            candidates = ([_unet_order(layout, classes, order) for order in BLOCK_ORDERS] if component == "unet"
                          else [_text_order(layout, classes)])
            fitting = next((paths for paths in candidates if _fits(layout, component, paths, shapes)), None)
            if fitting is None:
                break
            paths_of[component] = fitting
        else:
            return _modules(file_name, header, keys, paths_of), layout.name
    counts = ", ".join(f"{len(v)} {k} modules" for k, v in sorted(keys.items()))
    raise AdapterFileError(f"{file_name}: a cloneofsimo/lora file ({counts}) whose numbered modules match no "
                           "SD 1.x/2.x layout in cloneofsimo's order; refused")


def _modules(file_name: str, header: SafetensorsHeader, keys: Mapping[str, Mapping[int, Mapping[str, str]]],
             paths_of: Mapping[str, Sequence[str]]) -> list[PlannedModule]:
    modules: list[PlannedModule] = []
    for component, numbered in sorted(keys.items()):
        for index, parts in sorted(numbered.items()):
            entries = {DOWN: header.tensors[parts["down"]], UP: header.tensors[parts["up"]]}
            family, module_plan = plan_module(entries, f"{file_name}: module {component}:{index}")
            modules.append(PlannedModule(
                name=paths_of[component][index], component=component, flat=False, family=family,
                keys={DOWN: parts["down"], UP: parts["up"]}, weight=module_plan.weight, rank=module_plan.rank,
            ))
    return modules
