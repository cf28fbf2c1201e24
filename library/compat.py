"""Can this adapter be applied to this model? Checked before any weight is touched.

Also: which base an adapter targets (:func:`detect_base`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from library.base_names import hints_from_metadata
from library.families.norm import NormModule
from library.families.on_base import OnBaseModule
from library.layouts.model_layout import ModelLayout, ModuleShape, known_layouts
from library.lora import COMPONENTS, AdapterModule, LoraAdapter, LoraModule, split_target
from library.transformer_names import TRANSFORMER_BASES, at_root, transformer_base
from library.vocabulary import APPLICABLE_BASES, BASE_FAMILIES, BASE_NAMES, BASES


class IncompatibleAdapterError(ValueError):
    """The adapter does not fit the model; the message names the module and the shapes."""


def _weight_shape(module: nn.Module) -> tuple[int, ...] | None:
    base = getattr(module, "base_layer", module)  # a PEFT-wrapped layer keeps the original inside
    weight = getattr(base, "weight", None)
    return tuple(weight.shape) if isinstance(weight, torch.Tensor) else None


def refuse_foreign_base(adapter_base: str, base: str, name: str = "adapter") -> None:
    """Raise when an adapter made for ``adapter_base`` (sd3, flux) cannot go on ``base`` at all."""
    if adapter_base in BASE_FAMILIES and adapter_base not in APPLICABLE_BASES:
        raise IncompatibleAdapterError(
            f"{name}: is an adapter for {BASE_NAMES[adapter_base]} (a transformer base); Medley applies adapters to "
            f"{', '.join(BASE_NAMES[b] for b in APPLICABLE_BASES)}, and this base is {BASE_NAMES.get(base, base)}")


def _check_module(name: str, target: str, module: nn.Module, lora: AdapterModule) -> None:
    if isinstance(lora, NormModule):
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != lora.weight_shape:
            raise IncompatibleAdapterError(f"{name}: module {target} is not a norm layer of {lora.out_features} "
                                           "channels")
        return
    shape = _weight_shape(module)
    if shape is None:
        raise IncompatibleAdapterError(f"{name}: module {target} has no weight to adapt")
    if isinstance(lora, OnBaseModule) and 0 in lora.weight_shape[:2]:
        try:  # an (IA)3 vector knows one axis only
            lora.check_base(torch.empty(shape, device="meta"))
        except ValueError as error:
            raise IncompatibleAdapterError(f"{name}: module {target}: {error}") from None
        return
    expected_in, expected_out = shape[1], shape[0]
    if (lora.in_features, lora.out_features) != (expected_in, expected_out) or (len(shape) == 4) != lora.is_conv:
        raise IncompatibleAdapterError(
            f"{name}: module {target} expects in={expected_in} out={expected_out} "
            f"({'conv' if len(shape) == 4 else 'linear'}), the adapter has in={lora.in_features} "
            f"out={lora.out_features} ({'conv' if lora.is_conv else 'linear'})"
        )
    if lora.is_conv and tuple(shape[2:]) != lora.kernel:
        raise IncompatibleAdapterError(f"{name}: module {target} has a {shape[2]}x{shape[3]} kernel, the adapter a "
                                       f"{lora.kernel[0]}x{lora.kernel[1]} one")  # type: ignore[index]
    if isinstance(lora, LoraModule):
        if lora.up.shape[1] != lora.rank:
            raise IncompatibleAdapterError(
                f"{name}: module {target} has mismatched ranks (down {lora.rank}, up {lora.up.shape[1]})"
            )
        if not math.isfinite(float(lora.alpha)):
            raise IncompatibleAdapterError(f"{name}: module {target} alpha is not finite")


def check_applicable(adapter: LoraAdapter, components: Mapping[str, nn.Module | None], name: str = "adapter") -> None:
    """Raise :class:`IncompatibleAdapterError` unless every target of ``adapter`` exists in
    ``components`` ({"unet": pipe.unet, "text_encoder": ...}) with the right shape, and every
    tensor is finite. An adapter of a transformer base (FLUX, SD3) is refused naming its base.
    Nothing is modified.
    """
    foreign = sorted({t.partition(".")[0] for t in adapter.modules} - set(COMPONENTS))
    if foreign:
        base = detect_adapter_base(adapter)
        if base in APPLICABLE_BASES:
            base = "unknown"
        raise IncompatibleAdapterError(
            f"{name}: targets {foreign[0]}, a component UNet bases do not have: it is an adapter for "
            f"{BASE_NAMES[base]}, which Medley catalogues but cannot apply (it applies adapters to "
            f"{', '.join(BASE_NAMES[b] for b in APPLICABLE_BASES)})")
    lookup: dict[str, dict[str, nn.Module]] = {}
    for target, lora in sorted(adapter.modules.items()):
        component, path = split_target(target)
        model = components.get(component)
        if model is None:
            raise IncompatibleAdapterError(f"{name}: targets {component} ({target}), which this base does not have")
        if component not in lookup:
            lookup[component] = dict(model.named_modules())
        module = lookup[component].get(path)
        if module is None:
            raise IncompatibleAdapterError(f"{name}: module {target} does not exist in this base")
        _check_module(name, target, module, lora)
    _check_finite(adapter, name)


def _check_finite(adapter: LoraAdapter, name: str) -> None:
    """Raise unless every stored tensor is finite. A switch to never-seen adapters pays this,
    so it is one NaN-propagating min/max over all of them (``isfinite`` per tensor cost ~7 ms
    an SD1.5 adapter); only a failure walks the modules to name the culprit."""
    tensors = [t.reshape(-1) for lora in adapter.modules.values() for t in lora.tensors().values()
               if t.is_floating_point()]
    if not tensors:
        return
    dtypes = {t.dtype for t in tensors}
    flat = torch.cat(tensors if len(dtypes) == 1 else [t.float() for t in tensors])
    low, high = torch.aminmax(flat)
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return
    for target, lora in sorted(adapter.modules.items()):
        for part, tensor in lora.tensors().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise IncompatibleAdapterError(f"{name}: module {target} {part} holds NaN or infinite values")


# ---------------------------------------------------------------------------
# Which base an adapter was made for, from its shapes and its metadata.

# cross-attention width (attn2.to_k/to_v in) and text encoder width -> base
_CROSS_ATTENTION_WIDTHS = {384: "toy", 768: "sd1", 1024: "sd2", 2048: "sdxl"}
_TEXT_WIDTHS = {384: "toy", 768: "sd1", 1024: "sd2"}


def adapter_shapes(adapter: LoraAdapter) -> dict[str, ModuleShape]:
    """{target: the weight shape each linear/conv module of ``adapter`` updates} (norms and (IA)3 vectors,
    whose full shape only the base knows, are left out)."""
    shapes: dict[str, ModuleShape] = {}
    for target, module in adapter.modules.items():
        if isinstance(module, NormModule) or len(module.weight_shape) < 2 or 0 in module.weight_shape:
            continue
        shapes[target] = ModuleShape(module.out_features, module.in_features, module.kernel)
    return shapes


def _fits(layout: ModelLayout, shapes: Mapping[str, ModuleShape]) -> bool:
    for target, shape in shapes.items():
        component, _, path = target.partition(".")
        if layout.shape(component, path) != shape:
            return False
    return True


def _guess_from_widths(shapes: Mapping[str, ModuleShape]) -> str | None:
    if any(target.startswith("text_encoder_2.") for target in shapes):
        return "sdxl"
    for target, shape in shapes.items():
        if target.startswith("unet.") and target.endswith(("attn2.to_k", "attn2.to_v")):
            return _CROSS_ATTENTION_WIDTHS.get(shape.in_features)
    for target, shape in shapes.items():
        if target.startswith("text_encoder.") and target.endswith(("q_proj", "attention.self.query")):
            return _TEXT_WIDTHS.get(shape.in_features)
    return None


def detect_base(shapes: Mapping[str, ModuleShape], hints: Sequence[str] = (),
                layouts: Sequence[ModelLayout] | None = None) -> str:
    """``sd1``, ``sd2``, ``sdxl``, ``sd3``, ``flux``, ``toy`` or ``unknown``.

    Transformer bases (FLUX, SD3) are told from their module names first (library/transformer_names.py).
    Otherwise the shapes decide when exactly one known base has every target with the right
    shape; when several do (e.g. a ResNet-only LoRA fits SD1 and SD2), the first base
    the metadata ``hints`` name among them, else the first in sd1, sdxl, sd2, toy order.
    When none fits, the cross-attention / text widths, then the hints, then unknown.
    """
    transformer = _transformer_base(shapes, hints)
    if transformer is not None:
        return transformer
    if shapes and hints and hints[0] in TRANSFORMER_BASES and not any(
            t.startswith(("unet.", "transformer.")) for t in shapes):
        return hints[0]  # only text encoders (CLIP-L is FLUX's and SD3's too): the metadata names the base
    candidates = known_layouts() if layouts is None else layouts
    fitting = [layout.name for layout in candidates if shapes and _fits(layout, shapes)] if shapes else []
    if len(fitting) == 1:
        return fitting[0]
    if fitting:
        return next((hint for hint in hints if hint in fitting), fitting[0])
    guess = _guess_from_widths(shapes)
    if guess is not None:
        return guess
    return next((hint for hint in hints if hint in BASES), "unknown")


def _transformer_base(shapes: Mapping[str, ModuleShape], hints: Sequence[str]) -> str | None:
    paths = [t.partition(".")[2] for t in shapes if t.startswith(("transformer.", "unet."))]
    widths = [shape.in_features for t, shape in shapes.items() if at_root(t.partition(".")[2])]
    found = transformer_base(paths, widths, hints)
    if found is None and any(t.startswith("transformer.") for t in shapes):
        found = next((hint for hint in hints if hint in TRANSFORMER_BASES), "unknown")
    return found


def detect_adapter_base(adapter: LoraAdapter, extra_hints: Sequence[str] = ()) -> str:
    """The base of a loaded adapter, from its shapes and its header metadata."""
    return detect_base(adapter_shapes(adapter), [*hints_from_metadata(adapter.metadata), *extra_hints])
