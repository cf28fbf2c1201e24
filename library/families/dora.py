"""DoRA (weight-decomposed LoRA): a direction update plus a magnitude vector, W' = m * (W + dV) / ||W + dV||.

Two spellings, read from their trainers' code:

* kohya / LyCORIS ``dora_scale`` (LyCORIS ``weight_decompose`` / ``dora_wd``, on LoRA, LoHa or LoKr): with
  ``wd_on_out=True`` (LyCORIS' default) it is [out, 1] ([out, 1, 1, 1] for a conv) and the norm is over
  each OUTPUT channel's row (in, kh, kw); with ``wd_on_out=False`` (LyCORIS' original layout, still in
  older files) it is [1, in] ([1, in, 1, 1]) and the norm is over each INPUT channel's column (out, kh, kw).
  The layout of the stored tensor says which.
* PEFT / diffusers ``lora_magnitude_vector`` (``LoraConfig(use_dora=True)``): [out] for a linear layer,
  [1, out, 1, 1] for a conv, and the norm is always per OUTPUT channel (``torch.linalg.norm(W + s B A,
  dim=1)``; conv: over dims 1..3).

The update needs the base weight, so :class:`DoraModule` is an :class:`~library.families.on_base.OnBaseModule`:
``delta_on(W)`` = W' - W at strength 1, computed by ``lycoris.functional.weight_decompose`` (which adds
float eps to the norm; PEFT does not: a relative difference of ~1e-7). At a strength g the fusion engine
applies W + g (W' - W), as A1111 and ComfyUI do; PEFT instead scales dV inside the norm and LyCORIS
interpolates the rescale factor, so the three agree at g = 1 only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from library.errors import AdapterFileError
from library.families.base import DORA_SCALE, MAGNITUDE, as_float
from library.families.on_base import OnBaseModule
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule


def magnitude_axis(parameter: str, shape: tuple[int, ...], weight: ModuleShape | None, flat_in: bool,
                   where: str) -> str:
    """``out`` or ``in``: which channels the stored magnitude holds a norm for; raises when it fits neither."""
    numel = math.prod(shape)
    axis = "out"
    if parameter == DORA_SCALE and len(shape) >= 2 and shape[0] == 1 and shape[1] != 1:
        axis = "in"  # LyCORIS' per-input layout [1, in, ...]; its per-output one is [out, 1, ...]
    if parameter == MAGNITUDE and len(shape) not in (1, 4):
        raise AdapterFileError(f"{where} has a lora_magnitude_vector {list(shape)}, not [out] or [1, out, 1, 1]")
    if weight is None:
        return axis
    expected = weight.out_features if axis == "out" else (None if flat_in else weight.in_features)
    if expected is not None and numel != expected:
        raise AdapterFileError(f"{where} has a DoRA magnitude {list(shape)} for a weight of {weight.out_features} "
                               f"outputs and {weight.in_features} inputs")
    return axis


@dataclass(eq=False)
class DoraModule(OnBaseModule):
    """DoRA on any direction family: ``direction`` (its own scale included) and ``magnitude`` per ``axis``."""

    family = "dora"

    direction: AdapterModule
    magnitude: torch.Tensor
    axis: str  # "out": per output channel (kohya/LyCORIS wd_on_out, PEFT); "in": per input channel

    @property
    def out_features(self) -> int:
        return self.direction.out_features

    @property
    def in_features(self) -> int:
        return self.direction.in_features

    @property
    def kernel(self) -> tuple[int, int] | None:
        return self.direction.kernel

    @property
    def rank(self) -> int:
        return self.direction.rank

    def _lycoris_scale(self, dims: int) -> torch.Tensor:
        """The magnitude in LyCORIS' layout: [out, 1, ...] (wd_on_out) or [1, in, 1, ...]."""
        magnitude = as_float(self.magnitude).reshape(-1)
        if self.axis == "out":
            return magnitude.reshape(-1, *[1] * (dims - 1))
        return magnitude.reshape(1, -1, *[1] * (dims - 2))

    def delta_on(self, base_weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        from lycoris.functional.general import weight_decompose

        self.check_base(base_weight)
        base = as_float(base_weight)
        merged = base + self.direction.delta(base.dtype).reshape(base.shape)
        rescaled = weight_decompose(merged, self._lycoris_scale(base.dim()), 1, self.axis == "out", backend="torch")
        return (rescaled - base).to(dtype or base_weight.dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**{f"direction.{k}": v for k, v in self.direction.tensors().items()}, "magnitude": self.magnitude}
