"""What every adapter family shares: the parameters it claims, its plan from the header alone, its load.

A family (LoRA, LoCon with a Tucker core, LoHa, LoKr, full diff, norm, (IA)^3) is read in two steps:
:meth:`Family.plan` checks the tensor shapes of one module from the safetensors header (nothing loaded)
and says which weight the module updates and the rank its trainer chose; :meth:`Family.load` builds the
module's :class:`~library.lora.AdapterModule` from the loaded tensors. Parameters are named as LyCORIS and
kohya name them (``lora_down.weight``, ``hada_w1_a``, ``lokr_w2_b``, ``diff``...); the naming conventions
(library/formats/kohya.py, peft.py) translate PEFT's names (``lora_A.weight``...) into these.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from library.errors import AdapterFileError
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule

ALPHA = "alpha"
DORA_SCALE = "dora_scale"  # kohya / LyCORIS weight decomposition (DoRA) magnitude
MAGNITUDE = "lora_magnitude_vector"  # PEFT / diffusers DoRA magnitude
SHARED: frozenset[str] = frozenset({ALPHA, DORA_SCALE, MAGNITUDE})


@dataclass(frozen=True)
class ModulePlan:
    """One module's plan: the weight it updates (None when the header cannot tell, e.g. a norm) and the rank
    its trainer chose (0 when the family has none). ``flat_in``: the weight's in-features are
    in_channels * kh * kw of a conv whose kernel the header does not give (LoHa, LoKr store conv factors
    flattened); names are resolved against a base's layout to learn the kernel."""

    weight: ModuleShape | None
    rank: int
    flat_in: bool = False


def stacks_exactly(rank: int, out_features: int, in_flat: int) -> bool:
    """Whether an exact factorisation of ``rank`` is worth stacking: 2 * rank <= min(out, in * kh * kw).

    Below that bound the factors ``rank * (out + in)`` hold at most as many numbers as the dense update
    ``out * in`` and cost the fused layer no more than a dense term; above it the module joins as dense."""
    return 0 < 2 * rank <= min(out_features, in_flat)


class ExactFactorModule(AdapterModule):
    """A module with an exact factorisation of known rank (LoHa: r1 * r2, LoKr: rank1 * rank2) over the weight
    ``shape`` it updates: it stacks as factors when :func:`stacks_exactly` allows that rank, else it is a
    dense term; the shape gives its sizes."""

    shape: tuple[int, ...]

    @property
    def exact_rank(self) -> int:
        raise NotImplementedError

    @property
    def low_rank(self) -> bool:  # type: ignore[override]
        return stacks_exactly(self.exact_rank, *matrix(self.shape))

    @property
    def rank(self) -> int:
        return self.exact_rank if self.low_rank else min(matrix(self.shape))

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def kernel(self) -> tuple[int, int] | None:
        return (self.shape[2], self.shape[3]) if len(self.shape) == 4 else None


def shape_of(entries: Mapping[str, object], name: str) -> tuple[int, ...]:
    entry = entries[name]
    return tuple(entry.shape)  # type: ignore[attr-defined]


def alpha_scale(alpha: float | None, rank: int) -> float:
    """kohya / LyCORIS: scale = alpha / rank; alpha absent or 0 means alpha = rank (scale 1)."""
    if alpha is None or alpha == 0 or rank == 0:
        return 1.0
    return float(alpha) / rank


def as_float(tensor: torch.Tensor) -> torch.Tensor:
    """Work in float32 at least (products of half-precision factors lose digits)."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def matrix(weight_shape: tuple[int, ...]) -> tuple[int, int]:
    """(out, in * kh * kw): the weight seen as a matrix."""
    return weight_shape[0], math.prod(weight_shape[1:])


class Family(ABC):
    """One adapter family: the parameters it claims, its header checks and its load."""

    name: ClassVar[str]
    label: ClassVar[str]  # for messages: "LyCORIS LoHa"
    parameters: ClassVar[frozenset[str]]  # every parameter it owns (beside SHARED)
    markers: ClassVar[frozenset[str]]  # parameters whose presence makes a module this family's

    def require(self, entries: Mapping[str, object], names: tuple[str, ...], where: str) -> None:
        missing = [name for name in names if name not in entries]
        if missing:
            raise AdapterFileError(f"{where} has {self.label} weights but no {missing[0]}")

    @abstractmethod
    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        """Check one module's tensor shapes (``entries``: parameter -> header entry) and plan it.
        ``where`` starts every message ("x.safetensors: module lora_unet_...")."""

    @abstractmethod
    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        """The module's canonical form from its loaded tensors; ``weight`` is the planned (resolved) shape."""


def weight_tuple(weight: ModuleShape) -> tuple[int, ...]:
    return (weight.out_features, weight.in_features, *weight.kernel) if weight.kernel else \
        (weight.out_features, weight.in_features)
