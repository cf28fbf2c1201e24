"""Can this adapter be applied to this model? Checked before any weight is touched.

Also: which base an adapter targets (:func:`detect_base`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from library.base_names import hints_from_metadata
from library.layouts.model_layout import ModelLayout, ModuleShape, known_layouts
from library.lora import LoraAdapter, split_target
from library.records import BASES


class IncompatibleAdapterError(ValueError):
    """The adapter does not fit the model; the message names the module and the shapes."""


def _weight_shape(module: nn.Module) -> tuple[int, ...] | None:
    base = getattr(module, "base_layer", module)  # a PEFT-wrapped layer keeps the original inside
    weight = getattr(base, "weight", None)
    return tuple(weight.shape) if isinstance(weight, torch.Tensor) else None


def check_applicable(adapter: LoraAdapter, components: Mapping[str, nn.Module | None], name: str = "adapter") -> None:
    """Raise :class:`IncompatibleAdapterError` unless every target of ``adapter`` exists in
    ``components`` ({"unet": pipe.unet, "text_encoder": ...}) with the right shape, and every
    tensor is finite. Nothing is modified.
    """
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
        shape = _weight_shape(module)
        if shape is None:
            raise IncompatibleAdapterError(f"{name}: module {target} has no weight to adapt")
        expected_in, expected_out = shape[1], shape[0]
        if (lora.in_features, lora.out_features) != (expected_in, expected_out) or (len(shape) == 4) != lora.is_conv:
            raise IncompatibleAdapterError(
                f"{name}: module {target} expects in={expected_in} out={expected_out} "
                f"({'conv' if len(shape) == 4 else 'linear'}), the adapter has in={lora.in_features} "
                f"out={lora.out_features} ({'conv' if lora.is_conv else 'linear'})"
            )
        if lora.up.shape[1] != lora.rank:
            raise IncompatibleAdapterError(
                f"{name}: module {target} has mismatched ranks (down {lora.rank}, up {lora.up.shape[1]})"
            )
        if not math.isfinite(float(lora.alpha)):
            raise IncompatibleAdapterError(f"{name}: module {target} alpha is not finite")
    _check_finite(adapter, name)


def _check_finite(adapter: LoraAdapter, name: str) -> None:
    """Raise unless every down/up tensor is finite. A switch to never-seen adapters pays this,
    so it is one NaN-propagating min/max over all of them (``isfinite`` per tensor cost ~7 ms
    an SD1.5 adapter); only a failure walks the modules to name the culprit."""
    tensors = [t.reshape(-1) for lora in adapter.modules.values() for t in (lora.down, lora.up)]
    if not tensors:
        return
    dtypes = {t.dtype for t in tensors}
    flat = torch.cat(tensors if len(dtypes) == 1 else [t.float() for t in tensors])
    low, high = torch.aminmax(flat)
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return
    for target, lora in sorted(adapter.modules.items()):
        for part, tensor in (("down", lora.down), ("up", lora.up)):
            if not torch.isfinite(tensor).all():
                raise IncompatibleAdapterError(f"{name}: module {target} {part} holds NaN or infinite values")


# ---------------------------------------------------------------------------
# Which base an adapter was made for, from its shapes and its metadata.

# cross-attention width (attn2.to_k/to_v in) and text encoder width -> base
_CROSS_ATTENTION_WIDTHS = {384: "toy", 768: "sd1", 1024: "sd2", 2048: "sdxl"}
_TEXT_WIDTHS = {384: "toy", 768: "sd1", 1024: "sd2"}


def adapter_shapes(adapter: LoraAdapter) -> dict[str, ModuleShape]:
    """{target: the weight shape each module of ``adapter`` updates}."""
    shapes: dict[str, ModuleShape] = {}
    for target, module in adapter.modules.items():
        kernel = (int(module.down.shape[2]), int(module.down.shape[3])) if module.is_conv else None
        shapes[target] = ModuleShape(module.out_features, module.in_features, kernel)
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
    """``sd1``, ``sd2``, ``sdxl``, ``toy`` or ``unknown``.

    The shapes decide when exactly one known base has every target with the right
    shape; when several do (e.g. a ResNet-only LoRA fits SD1 and SD2), the first base
    the metadata ``hints`` name among them, else the first in sd1, sdxl, sd2, toy order.
    When none fits, the cross-attention / text widths, then the hints, then unknown.
    """
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


def detect_adapter_base(adapter: LoraAdapter, extra_hints: Sequence[str] = ()) -> str:
    """The base of a loaded adapter, from its shapes and its header metadata."""
    return detect_base(adapter_shapes(adapter), [*hints_from_metadata(adapter.metadata), *extra_hints])
