"""(IA)^3: a learned rescaling of a layer's outputs or inputs, W' = W * f along one axis.

* LyCORIS ``ia3``: ``weight`` ([dim], conv [1, dim, 1, 1]) and ``on_input`` (0 or 1); f = 1 + weight,
  over the input channels when on_input else the outputs; the bias is left alone (LyCORIS merges the weight
  only).
* PEFT ``IA3Config``: ``ia3_l`` [out, 1] (scales outputs, bias included: PEFT's merge multiplies the bias
  too) or [1, in] (a feed-forward module: scales inputs); f = ia3_l. A conv's [1, n, 1, 1] does not say
  which axis (that is in the config's ``feedforward_modules``) and is refused.

The update depends on the base weight: delta_on(W) = W * (f - 1) (see library/families/on_base.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from library.errors import AdapterFileError
from library.families.base import Family, ModulePlan, as_float, shape_of
from library.families.on_base import OnBaseModule
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule

WEIGHT, ON_INPUT, IA3_L = "weight", "on_input", "ia3_l"


@dataclass(eq=False)
class Ia3Module(OnBaseModule):
    """W' = W * factor along ``axis`` ("out" or "in"); ``scales_bias``: the bias is rescaled too."""

    family = "ia3"

    factor: torch.Tensor  # [dim], the multiplier itself (1 = no change)
    axis: str
    scales_bias: bool = False
    shape: tuple[int, ...] = ()  # the base weight's shape once applied (unknown from the file alone)

    @property
    def out_features(self) -> int:
        return self.shape[0] if self.shape else (int(self.factor.numel()) if self.axis == "out" else 0)

    @property
    def in_features(self) -> int:
        return self.shape[1] if self.shape else (int(self.factor.numel()) if self.axis == "in" else 0)

    @property
    def kernel(self) -> tuple[int, int] | None:
        return (self.shape[2], self.shape[3]) if len(self.shape) == 4 else None

    @property
    def rank(self) -> int:
        return 0

    def _broadcast(self, dims: int) -> torch.Tensor:
        factor = as_float(self.factor).reshape(-1)
        return factor.reshape(-1, *[1] * (dims - 1)) if self.axis == "out" else factor.reshape(1, -1, *[1] * (dims - 2))

    def check_base(self, base_weight: torch.Tensor) -> None:
        size = base_weight.shape[0] if self.axis == "out" else base_weight.shape[1]
        if base_weight.dim() < 2 or size != self.factor.numel():
            raise ValueError(f"an (IA)3 rescaling of {self.factor.numel()} {self.axis}put channels cannot be applied "
                             f"to a {list(base_weight.shape)} weight")

    def delta_on(self, base_weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        self.check_base(base_weight)
        base = as_float(base_weight)
        return (base * (self._broadcast(base.dim()) - 1)).to(dtype or base_weight.dtype)

    def bias_delta_on(self, base_bias: torch.Tensor | None) -> torch.Tensor | None:
        if base_bias is None or not self.scales_bias:
            return None
        return (as_float(base_bias) * (as_float(self.factor).reshape(-1) - 1)).to(base_bias.dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"factor": self.factor}


class Ia3Family(Family):
    name = "ia3"
    label = "(IA)3"
    parameters = frozenset({WEIGHT, ON_INPUT, IA3_L})
    markers = frozenset({ON_INPUT, IA3_L})

    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        if IA3_L in entries:
            if WEIGHT in entries or ON_INPUT in entries:
                raise AdapterFileError(f"{where} mixes PEFT and LyCORIS (IA)3 weights")
            shape = shape_of(entries, IA3_L)
            if len(shape) != 2 or 1 not in shape or 0 in shape:
                kind = "a conv layer's" if len(shape) == 4 else "an"
                raise AdapterFileError(f"{where} has {kind} (IA)3 vector {list(shape)} whose axis (inputs or "
                                       "outputs) only the adapter's config says; refused")
            return ModulePlan(None, 0)
        self.require(entries, (WEIGHT, ON_INPUT), where)
        shape = shape_of(entries, WEIGHT)
        if (len(shape) not in (1, 4) or 0 in shape or (len(shape) == 4 and (shape[0], *shape[2:]) != (1, 1, 1))
                or shape_of(entries, ON_INPUT) not in ((), (1,))):
            raise AdapterFileError(f"{where} has an (IA)3 weight {list(shape)} that is not one vector")
        return ModulePlan(None, 0)

    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        if IA3_L in tensors:
            vector = tensors[IA3_L]
            on_output = vector.shape[1] == 1
            return Ia3Module(factor=vector.reshape(-1), axis="out" if on_output else "in", scales_bias=on_output)
        on_input = bool(int(tensors[ON_INPUT].reshape(-1)[0].item()))
        return Ia3Module(factor=as_float(tensors[WEIGHT]).reshape(-1) + 1, axis="in" if on_input else "out")


IA3 = Ia3Family()
