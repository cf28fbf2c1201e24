"""Orthogonal Monte Carlo Dropout ("Rethinking Inter-LoRA Orthogonality in Adapter Merging:
Insights from Orthogonal Monte Carlo Dropout").

    out = W0 x + sum_k s_k (alpha_k / r_k) m_k * (B_k A_k x),     s_k = w_k / (1 - p_k)

with masks ``m_k`` drawn per element of the output, fresh at every forward, so that at most
one adapter acts on any element (the adapters' contributions are orthogonal) and each
acts with probability 1 - p_k (unbiased: E[out] is the weighted merge). The paper draws
z_k ~ Bernoulli(q_k) and sets m_k = z_k prod_{j<k} (1 - z_j) with q_1 = 1 - p_1,
q_k = (1 - p_k) / (sum_{j<k} p_j - (k - 2)); that is exactly a categorical draw over
{adapter 1, ..., adapter k, none} with P(k) = 1 - p_k, which we sample with one uniform
per element (see :func:`bernoulli_rates` for the q_k). Needs sum_k (1 - p_k) <= 1; the
default p_k = 1 - 1/k gives every element to exactly one adapter. ``seed`` makes it
deterministic. Text-encoder weights stay merged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fusion.context import StepContext
from fusion.layer import FusedLayer
from fusion.methods.base import FusionMethod
from fusion.spec import AdapterSpec


def bernoulli_rates(p: Sequence[float]) -> list[float]:
    """The paper's sequential rates q_k, so that P(m_k = 1) = 1 - p_k."""
    rates = []
    for k, p_k in enumerate(p, start=1):
        remaining = sum(p[: k - 1]) - (k - 2) if k > 1 else 1.0
        rates.append(0.0 if remaining <= 0 else min(1.0, (1.0 - p_k) / remaining))
    return rates


def interval_edges(keep: Sequence[float]) -> list[tuple[float, float]]:
    """[low, high) of each adapter in one uniform draw (lengths 1 - p_k, back to back)."""
    edges, low = [], 0.0
    for probability in keep:
        edges.append((low, low + probability))
        low += probability
    return edges


def sample_masks(
    shape: Sequence[int], keep: Sequence[float], generator: torch.Generator | None = None, device: Any = "cpu"
) -> torch.Tensor:
    """Boolean masks [k, *shape]: disjoint, mask k set with probability ``keep[k]``."""
    uniform = torch.rand(tuple(shape), generator=generator, device=device)
    return torch.stack([(uniform >= low) & (uniform < high) for low, high in interval_edges(keep)])


class OrthogonalMethod(FusionMethod):
    name = "orthogonal"

    def __init__(self, p: float | Sequence[float] | None = None, seed: int | None = None) -> None:
        self.p_option = p
        self.seed = seed
        self.p: list[float] = []
        self._generators: dict[str, torch.Generator] = {}

    def options(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed}

    def prepare(self, specs: list[AdapterSpec], components: Mapping[str, nn.Module]) -> list[AdapterSpec]:
        count = len(specs)
        if self.p_option is None:
            p = [1.0 - 1.0 / count] * count if count else []
        elif isinstance(self.p_option, (int, float)):
            p = [float(self.p_option)] * count
        else:
            p = [float(v) for v in self.p_option]
        if len(p) != count:
            raise ValueError(f"orthogonal: {len(p)} dropout rates for {count} adapters")
        if any(not 0.0 <= v < 1.0 for v in p):
            raise ValueError(f"orthogonal: dropout rates must lie in [0, 1), got {p}")
        if sum(1.0 - v for v in p) > 1.0 + 1e-6:
            raise ValueError(f"orthogonal: needs sum(1 - p_k) <= 1 so masks can be disjoint, got p={p}")
        self.p = p
        self._generators = {}
        return specs

    def splits(self, component: str, path: str) -> bool:
        return True

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def combine(
        self, layer: FusedLayer, base_out: torch.Tensor, outputs: list[torch.Tensor], context: StepContext
    ) -> torch.Tensor:
        edges = interval_edges([1.0 - v for v in self.p])
        uniform = torch.rand(base_out.shape, generator=self._generator(base_out.device), device=base_out.device)
        total = base_out
        for adapter, output in zip(layer.adapters, outputs, strict=True):
            low, high = edges[adapter]
            mask = (uniform >= low) & (uniform < high)
            total = total + output * mask.to(output.dtype) / (1.0 - self.p[adapter])
        return total
