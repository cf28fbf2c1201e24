"""LyCORIS LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, optional ``hada_t1``/``hada_t2``.

delta = (alpha / r) * (W1 ⊙ W2) with W1 = w1_a @ w1_b and W2 = w2_a @ w2_b (conv factors are stored
flattened, w1_b [r, in * kh * kw]); with Tucker cores (a kxk conv) W_k[o, i, h, w] =
sum_{a,b} t_k[a, b, h, w] w_k_a[a, o] w_k_b[b, i]. The delta is computed by ``lycoris.functional.loha``.

The Hadamard product of two rank-r products is itself an exact low-rank product of rank r1 * r2 (the
row-wise Khatri-Rao product, written here: no library gives it): with W1 = U1 V1 and W2 = U2 V2,
(W1 ⊙ W2)[o, i] = sum_{p,q} (U1[o,p] U2[o,q]) (V1[p,i] V2[q,i]), so up[o, (p,q)] = U1[o,p] U2[o,q] and
down[(p,q), i] = V1[p,i] V2[q,i]. It stays exact in every case, Tucker cores included (the core folds
into V). :meth:`LohaModule.factors` gives it when r1 * r2 passes
:func:`~library.families.base.stacks_exactly`, else None and the module joins as a dense term.
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

W1A, W1B, W2A, W2B, T1, T2 = "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"


def khatri_rao(u1: torch.Tensor, v1: torch.Tensor, u2: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(up, down) with up @ down == (u1 @ v1) * (u2 @ v2) exactly: rank r1 * r2."""
    up = (u1[:, :, None] * u2[:, None, :]).reshape(u1.shape[0], -1)
    down = (v1[:, None, :] * v2[None, :, :]).reshape(-1, v1.shape[1])
    return up, down


@dataclass(eq=False)
class LohaModule(ExactFactorModule):
    """A LyCORIS LoHa update of one linear or conv weight (``weight_shape``), scale alpha / r."""

    family = "loha"

    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    alpha: float
    shape: tuple[int, ...]  # the updated weight's shape: (out, in) or (out, in, kh, kw)
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    @property
    def declared_rank(self) -> int:
        return int(self.w1b.shape[0])

    @property
    def scale(self) -> float:
        return alpha_scale(self.alpha, self.declared_rank)

    @property
    def exact_rank(self) -> int:
        return int(self.w1b.shape[0]) * int(self.w2b.shape[0])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from lycoris.functional.loha import diff_weight

        w1a, w1b, w2a, w2b = (as_float(t) for t in (self.w1a, self.w1b, self.w2a, self.w2b))
        t1 = as_float(self.t1) if self.t1 is not None else None
        t2 = as_float(self.t2) if self.t2 is not None else None
        # lycoris' argument order: (w1d, w1u, w2d, w2u, t1, t2) = (w1_b, w1_a, w2_b, w2_a, t1, t2)
        weight = diff_weight(w1b, w1a, w2b, w2a, t1, t2, gamma=self.scale, backend="torch")
        return weight.reshape(self.shape).to(dtype)

    def _halves(self) -> tuple[torch.Tensor, ...]:
        """(U1, V1, U2, V2), each W_k = U_k @ V_k over the flattened input (in * kh * kw)."""
        if self.t1 is None or self.t2 is None:
            return tuple(as_float(t).flatten(1) for t in (self.w1a, self.w1b, self.w2a, self.w2b))
        halves: list[torch.Tensor] = []
        for t, wa, wb in ((self.t1, self.w1a, self.w1b), (self.t2, self.w2a, self.w2b)):
            v = torch.einsum("abhw,bi->aihw", as_float(t), as_float(wb)).flatten(1)  # [r, in * kh * kw]
            halves.extend((as_float(wa).t().contiguous(), v))  # U = w_a^T [out, r]
        return tuple(halves)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        if not self.low_rank:
            return None
        u1, v1, u2, v2 = self._halves()
        up, down = khatri_rao(u1, v1, u2, v2)
        if self.kernel is not None:
            down = down.reshape(down.shape[0], self.shape[1], *self.kernel)
            up = up[:, :, None, None]
        return down, up, self.scale

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {W1A: self.w1a, W1B: self.w1b, W2A: self.w2a, W2B: self.w2b, T1: self.t1, T2: self.t2}
        return {name: tensor for name, tensor in named.items() if tensor is not None}


class LohaFamily(Family):
    name = "loha"
    label = "LyCORIS LoHa"
    parameters = frozenset({W1A, W1B, W2A, W2B, T1, T2})
    markers = parameters

    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        self.require(entries, (W1A, W1B, W2A, W2B), where)
        w1a, w1b, w2a, w2b = (shape_of(entries, n) for n in (W1A, W1B, W2A, W2B))
        if (T1 in entries) != (T2 in entries):
            raise AdapterFileError(f"{where} has one LoHa Tucker core but not the other")
        if any(len(s) != 2 or 0 in s for s in (w1a, w1b, w2a, w2b)):
            raise AdapterFileError(f"{where} has LoHa factors {[list(s) for s in (w1a, w1b, w2a, w2b)]}, "
                                   "not four non-empty matrices")
        if T1 in entries:
            t1, t2 = shape_of(entries, T1), shape_of(entries, T2)
            # Tucker: w_a [r, out], w_b [r, in], t [r, r, kh, kw]
            if (len(t1) != 4 or t1 != t2 or t1[:2] != (w1a[0], w1b[0]) or (w2a[0], w2b[0]) != t2[:2]
                    or w1a[1] != w2a[1] or w1b[1] != w2b[1]):
                raise AdapterFileError(f"{where} has LoHa Tucker cores {list(t1)}, {list(t2)} that do not fit "
                                       f"factors {[list(s) for s in (w1a, w1b, w2a, w2b)]}")
            return ModulePlan(ModuleShape(w1a[1], w1b[1], (t1[2], t1[3])), w1b[0])
        if w1a[1] != w1b[0] or w2a[1] != w2b[0] or w1a[0] != w2a[0] or w1b[1] != w2b[1]:
            raise AdapterFileError(f"{where} has LoHa factors {[list(s) for s in (w1a, w1b, w2a, w2b)]} that do not "
                                   "multiply to two products of one shape")
        return ModulePlan(ModuleShape(w1a[0], w1b[1]), w1b[0], flat_in=True)

    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        if weight is None:
            raise ValueError("a LoHa module needs its planned weight shape")
        return LohaModule(w1a=tensors[W1A], w1b=tensors[W1B], w2a=tensors[W2A], w2b=tensors[W2B],
                          alpha=0.0 if alpha is None else float(alpha), shape=weight_tuple(weight),
                          t1=tensors.get(T1), t2=tensors.get(T2))


LOHA = LohaFamily()
