"""LyCORIS norm: ``w_norm`` and ``b_norm``, the trained update of a LayerNorm / GroupNorm's weight and bias.

Not a linear or conv update: :class:`NormModule` says so (``is_norm``); the fusion engine adds its
:meth:`~NormModule.delta` to the norm layer's weight and :meth:`~NormModule.bias_delta` to its bias (as
LyCORIS' NormModule merges them: weight + w_norm, bias + b_norm, scale 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from library.errors import AdapterFileError
from library.families.base import Family, ModulePlan, shape_of
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule

W_NORM, B_NORM = "w_norm", "b_norm"


@dataclass(eq=False)
class NormModule(AdapterModule):
    """The update of one normalisation layer: weight += w_norm, bias += b_norm."""

    family: ClassVar[str] = "norm"
    low_rank: ClassVar[bool] = False
    is_norm: ClassVar[bool] = True

    weight: torch.Tensor  # [dim]
    bias: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return 1

    @property
    def kernel(self) -> tuple[int, int] | None:
        return None

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features,)

    @property
    def rank(self) -> int:
        return 0

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.weight.to(dtype)

    def bias_delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {W_NORM: self.weight, **({B_NORM: self.bias} if self.bias is not None else {})}


class NormFamily(Family):
    name = "norm"
    label = "LyCORIS norm"
    parameters = frozenset({W_NORM, B_NORM})
    markers = parameters

    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        self.require(entries, (W_NORM,), where)
        weight = shape_of(entries, W_NORM)
        if len(weight) != 1 or weight[0] == 0:
            raise AdapterFileError(f"{where} has a w_norm {list(weight)} that is not one non-empty vector")
        if B_NORM in entries and shape_of(entries, B_NORM) != weight:
            raise AdapterFileError(f"{where} has a b_norm {list(shape_of(entries, B_NORM))} for a w_norm "
                                   f"{list(weight)}")
        return ModulePlan(None, 0)

    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        return NormModule(weight=tensors[W_NORM], bias=tensors.get(B_NORM))


NORM = NormFamily()
