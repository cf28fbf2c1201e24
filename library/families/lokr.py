"""LyCORIS LoKr: ``lokr_w1`` or ``lokr_w1_a``/``lokr_w1_b``, ``lokr_w2`` or ``lokr_w2_a``/``lokr_w2_b``,
optional ``lokr_t2`` (a Tucker core for a kxk conv's w2).

delta = scale * kron(W1, W2), W1 [a, c] = w1 or w1_a @ w1_b, W2 [b, d(, kh, kw)] = w2, w2_a @ w2_b (conv:
w2_b stored flattened [r, d * kh * kw]) or the Tucker rebuild t2 x w2_a x w2_b; scale = alpha / r with r
the inner dim of the factorised side (w1_b or w2_b rows), 1 when both sides are full matrices (as LyCORIS'
module and ComfyUI do). The delta is computed by ``lycoris.functional.lokr.kron_weight``.

Exact low rank (written here: no library gives it): with W1 = U1 V1 and W2 = U2 V2 (W2 seen as a matrix
over the flattened conv input), kron(U1 V1, U2 V2) = kron(U1, U2) kron(V1, V2) exactly, of rank r1 * r2,
where a full side of shape [m, n] counts as (M, I) or (I, M), rank min(m, n). :meth:`LokrModule.factors`
gives it when r1 * r2 passes :func:`~library.families.base.stacks_exactly`, else None (a dense term).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from library.errors import AdapterFileError
from library.families.base import (
    ExactFactorModule,
    Family,
    ModulePlan,
    alpha_scale,
    as_float,
    shape_of,
    weight_tuple,
)
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule

W1, W1A, W1B = "lokr_w1", "lokr_w1_a", "lokr_w1_b"
W2, W2A, W2B, T2 = "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"


def _split_full(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A full matrix [m, n] as (U, V) with U @ V == it and the smaller inner dim."""
    m, n = weight.shape
    eye_dtype = weight.dtype
    if n <= m:
        return weight, torch.eye(n, dtype=eye_dtype)
    return torch.eye(m, dtype=eye_dtype), weight


@dataclass(eq=False)
class LokrModule(ExactFactorModule):
    """A LyCORIS LoKr update of one linear or conv weight (``shape``)."""

    family = "lokr"

    alpha: float
    shape: tuple[int, ...]
    w1: torch.Tensor | None = None
    w1a: torch.Tensor | None = None
    w1b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2a: torch.Tensor | None = None
    w2b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    @property
    def declared_rank(self) -> int:
        """The trainer's lora_dim (the factorised side's inner dim), or the exact rank when both are full."""
        if self.w1b is not None:
            return int(self.w1b.shape[0])
        if self.w2b is not None:
            return int(self.w2b.shape[0])
        return self.exact_rank

    @property
    def scale(self) -> float:
        if self.w1b is None and self.w2b is None:
            return 1.0
        return alpha_scale(self.alpha, self.declared_rank)

    def _side_ranks(self) -> tuple[int, int]:
        first = int(self.w1b.shape[0]) if self.w1b is not None else min(self.w1.shape)  # type: ignore[union-attr]
        if self.w2b is not None:
            second = int(self.w2b.shape[0])
        else:
            w2 = self.w2
            assert w2 is not None
            second = min(int(w2.shape[0]), int(w2[0].numel()))
        return first, second

    @property
    def exact_rank(self) -> int:
        first, second = self._side_ranks()
        return first * second

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from lycoris.functional.lokr import kron_weight

        parts = [as_float(t) if t is not None else None
                 for t in (self.w1, self.w1a, self.w1b, self.w2, self.w2a, self.w2b, self.t2)]
        weight = kron_weight(*parts, scale=self.scale, backend="torch")
        return weight.reshape(self.shape).to(dtype)

    def _first(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.w1 is not None:
            return _split_full(as_float(self.w1))
        assert self.w1a is not None and self.w1b is not None
        return as_float(self.w1a), as_float(self.w1b)

    def _second(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U2, V2) with U2 @ V2 == W2 as a matrix [b, d * kh * kw]."""
        if self.w2 is not None:
            return _split_full(as_float(self.w2).flatten(1))
        assert self.w2a is not None and self.w2b is not None
        if self.t2 is not None:  # W2[k, l, h, w] = sum_ij t2[i, j, h, w] w2_a[i, k] w2_b[j, l]
            v = torch.einsum("ijhw,jl->ilhw", as_float(self.t2), as_float(self.w2b)).flatten(1)
            return as_float(self.w2a).t().contiguous(), v
        return as_float(self.w2a), as_float(self.w2b).flatten(1)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        if not self.low_rank:
            return None
        (u1, v1), (u2, v2) = self._first(), self._second()
        up, down = torch.kron(u1, u2), torch.kron(v1, v2)
        if self.kernel is not None:
            down = down.reshape(down.shape[0], self.shape[1], *self.kernel)
            up = up[:, :, None, None]
        return down, up, self.scale

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {W1: self.w1, W1A: self.w1a, W1B: self.w1b, W2: self.w2, W2A: self.w2a, W2B: self.w2b, T2: self.t2}
        return {name: tensor for name, tensor in named.items() if tensor is not None}


class LokrFamily(Family):
    name = "lokr"
    label = "LyCORIS LoKr"
    parameters = frozenset({W1, W1A, W1B, W2, W2A, W2B, T2})
    markers = parameters

    def _first(self, entries: Mapping[str, object], where: str) -> tuple[int, int, int | None]:
        """(a, c, rank or None) of W1."""
        if W1 in entries:
            shape = shape_of(entries, W1)
            if len(shape) != 2 or 0 in shape or W1A in entries or W1B in entries:
                raise AdapterFileError(f"{where} has a LoKr w1 {list(shape)} that is not one non-empty matrix")
            return shape[0], shape[1], None
        self.require(entries, (W1A, W1B), where)
        a, b = shape_of(entries, W1A), shape_of(entries, W1B)
        if len(a) != 2 or len(b) != 2 or a[1] != b[0] or 0 in a or 0 in b:
            raise AdapterFileError(f"{where} has LoKr w1 factors {list(a)}, {list(b)} that do not multiply")
        return a[0], b[1], b[0]

    def _second(self, entries: Mapping[str, object], where: str) -> tuple[int, int, tuple[int, int] | None,
                                                                           int | None, bool]:
        """(b, d, kernel, rank or None, flat_in) of W2."""
        if W2 in entries:
            shape = shape_of(entries, W2)
            if len(shape) not in (2, 4) or 0 in shape or W2A in entries or W2B in entries or T2 in entries:
                raise AdapterFileError(f"{where} has a LoKr w2 {list(shape)} that is not one non-empty weight")
            return shape[0], shape[1], (shape[2], shape[3]) if len(shape) == 4 else None, None, len(shape) == 2
        self.require(entries, (W2A, W2B), where)
        a, b = shape_of(entries, W2A), shape_of(entries, W2B)
        if T2 in entries:  # Tucker: t2 [r, r, kh, kw], w2_a [r, b], w2_b [r, d]
            t = shape_of(entries, T2)
            if len(t) != 4 or len(a) != 2 or len(b) != 2 or t[:2] != (a[0], b[0]) or 0 in t or 0 in a or 0 in b:
                raise AdapterFileError(f"{where} has a LoKr Tucker core {list(t)} that does not fit w2 factors "
                                       f"{list(a)}, {list(b)}")
            return a[1], b[1], (t[2], t[3]), b[0], False
        if len(a) != 2 or len(b) not in (2, 4) or a[1] != b[0] or 0 in a or 0 in b:
            raise AdapterFileError(f"{where} has LoKr w2 factors {list(a)}, {list(b)} that do not multiply")
        if len(b) == 4:
            return a[0], b[1], (b[2], b[3]), b[0], False
        return a[0], b[1], None, b[0], True

    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        a, c, first_rank = self._first(entries, where)
        b, d, kernel, second_rank, flat_in = self._second(entries, where)
        shape = ModuleShape(a * b, c * d, kernel)
        rank = first_rank or second_rank
        if rank is None:
            rank = min(a, c) * min(b, d * (kernel[0] * kernel[1] if kernel else 1))
        return ModulePlan(shape, rank, flat_in=flat_in)

    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        if weight is None:
            raise ValueError("a LoKr module needs its planned weight shape")
        return LokrModule(alpha=0.0 if alpha is None else float(alpha), shape=weight_tuple(weight),
                          w1=tensors.get(W1), w1a=tensors.get(W1A), w1b=tensors.get(W1B), w2=tensors.get(W2),
                          w2a=tensors.get(W2A), w2b=tensors.get(W2B), t2=tensors.get(T2))


LOKR = LokrFamily()
