"""LyCORIS full / diff: ``diff`` (the whole weight update) and optional ``diff_b`` (the bias update).

Nothing to compute: the stored diff is the delta (LyCORIS' FullModule saves weight - original), scale 1.
It is a dense term; its bias update, when present, is added to the layer's output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from library.errors import AdapterFileError
from library.families.base import Family, ModulePlan, shape_of
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule, DenseModule

DIFF, DIFF_B = "diff", "diff_b"


@dataclass(eq=False)
class FullModule(DenseModule):
    """A full weight update with an optional bias update: y += scale * (D x + bias)."""

    bias: torch.Tensor | None = None

    def bias_delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """The update of the layer's bias ([out]), or None."""
        return None if self.bias is None else self.bias.to(dtype) * self.scale

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, **({"bias": self.bias} if self.bias is not None else {})}


class FullFamily(Family):
    name = "full"
    label = "LyCORIS full (diff)"
    parameters = frozenset({DIFF, DIFF_B})
    markers = frozenset({DIFF})

    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        self.require(entries, (DIFF,), where)
        diff = shape_of(entries, DIFF)
        if len(diff) not in (2, 4) or 0 in diff:
            raise AdapterFileError(f"{where} has a diff {list(diff)} that is not a linear or conv weight")
        if DIFF_B in entries and shape_of(entries, DIFF_B) != (diff[0],):
            raise AdapterFileError(f"{where} has a diff_b {list(shape_of(entries, DIFF_B))} for {diff[0]} outputs")
        return ModulePlan(ModuleShape(diff[0], diff[1], (diff[2], diff[3]) if len(diff) == 4 else None), 0)

    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        return FullModule(weight=tensors[DIFF], scale=1.0, source_family="full", bias=tensors.get(DIFF_B))


FULL = FullFamily()
