"""The fused layer: one wrapper per targeted Linear/Conv2d, holding the stacked adapters.

With k adapters at this layer stacked as ``down`` [R, in] (R = sum of ranks; conv: the
down kernels stacked [R, in, kh, kw]) and ``up`` [out, R] (conv: [out, R, 1, 1]), it computes

    y = base(x) + up_g (down x),    up_g = up * diag(g)

two skinny products whatever k is. ``g`` holds, per rank slot, the adapter's static scale
(alpha / r x weight x block weight) times the gate the owning session gives for the current
step; it is recomputed only when the session's gate version moves, and slots whose gate is
0 are dropped from the products. Methods that need each adapter's own output (orthogonal
dropout, the trained gate) get them from :meth:`FusedLayer.outputs` via ``owner.combine``.

Adapters whose update has no small exact factorisation (LyCORIS full/diff, a LoHa or LoKr of
high exact rank) join as dense terms ``D_j`` (already scaled by their static scale):

    y = base(x) + up_g (down x) + (sum_j g_j D_j) x

with the same per-adapter gates (the layer's ``adapters`` list the low-rank slots first, then
the dense terms), the same per-adapter outputs and the same unconditional-row gains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, eq=False)
class DenseTerm:
    """One adapter's dense update at a layer (and of its bias, for a full diff or (IA)^3), static scale folded in."""

    adapter: int
    weight: torch.Tensor
    bias: torch.Tensor | None = None


@dataclass(frozen=True)
class Slot:
    """One adapter's place in a layer's stack: ranks ``start:stop``, its session index."""

    adapter: int
    start: int
    stop: int


class GateOwner(Protocol):
    gate_version: int
    uncond_gains: list[float] | None  # per session adapter: its gain in the unconditional half of guidance
    guided_rows: int  # in a guided UNet call, the rows of the unconditional half (0: not a guided call)
    row_coeffs: dict[str, torch.Tensor] | None  # heterogeneous batch: {"unet"/"text": [rows, adapters]}
    row_version: int

    def gates_for(self, layer: FusedLayer) -> list[float] | None: ...

    def combine(self, layer: FusedLayer, base_out: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor: ...


def weight_of(module: nn.Module) -> torch.Tensor:
    base = getattr(module, "base_layer", module)  # a PEFT-wrapped layer keeps the original inside
    weight = getattr(base, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight to adapt")
    return weight


class FusedLayer(nn.Module):
    """Wraps ``base``; idle (a plain pass-through) until a session loads adapters into it.

    The wrapper shares ``base``'s parameter, buffer and child dicts instead of registering
    ``base`` as a child, so while it is in place the model's ``state_dict``, ``parameters()``
    and ``.to()`` see exactly the original names and tensors.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.__dict__.update(base=base, _parameters=base._parameters, _buffers=base._buffers, _modules=base._modules)
        weight = weight_of(base)
        self.is_conv = weight.dim() == 4
        conv = getattr(base, "base_layer", base)
        if self.is_conv:
            if getattr(conv, "groups", 1) != 1 or getattr(conv, "padding_mode", "zeros") != "zeros":
                raise TypeError("conv LoRA on grouped or non-zero-padded convolutions is not supported")
            self._conv_args = (conv.stride, conv.padding, conv.dilation)
        self.target = ""
        self.slots: tuple[Slot, ...] = ()
        self.adapters: tuple[int, ...] = ()  # session indices of the adapters at this layer, in slot order
        self.down: torch.Tensor | None = None
        self.up: torch.Tensor | None = None
        self.dense: tuple[DenseTerm, ...] = ()
        self._dense_eff: torch.Tensor | None = None
        self._dense_uncond: torch.Tensor | None = None  # the dense sum the unconditional rows use (None: same)
        self._dense_gains: tuple[float, ...] = ()
        self._dense_bias: torch.Tensor | None = None
        self._dense_bias_uncond: torch.Tensor | None = None
        self.split = False
        self.static = True
        self._owner: GateOwner | None = None
        self._seen = -1
        self._down_eff: torch.Tensor | None = None
        self._up_eff: torch.Tensor | None = None
        self._uncond_eff: torch.Tensor | None = None  # per-rank gains of the unconditional rows (None: all 1)
        self._gates: tuple[float, ...] | None = None
        self._gates_loaded = False
        self._kept_slots: list[int] = []
        self._row_cache: tuple[object, torch.Tensor | None] | None = None

    # the wrapped module's attributes, for code that reads them through the wrapper
    @property
    def weight(self) -> torch.Tensor:
        return weight_of(self.base)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(getattr(self.base, "base_layer", self.base), "bias", None)

    def load(
        self,
        target: str,
        slots: tuple[Slot, ...],
        down: torch.Tensor | None,
        up: torch.Tensor | None,
        owner: GateOwner,
        static: bool,
        split: bool,
        dense: tuple[DenseTerm, ...] = (),
    ) -> None:
        """Take a session's stacked adapters (``up`` and the dense terms already carry the static scales)."""
        # plain attributes (no tensors are registered: the wrapper never shows in a state dict);
        # one dict update instead of nn.Module.__setattr__ per attribute keeps swaps fast
        self.__dict__.update(
            target=target,
            slots=slots,
            adapters=tuple(slot.adapter for slot in slots) + tuple(term.adapter for term in dense),
            down=down,
            up=up,
            dense=dense,
            _dense_eff=_dense_sum(dense, None),
            _dense_bias=_bias_sum(dense, None),
            _dense_uncond=None,
            _dense_bias_uncond=None,
            _dense_gains=tuple(1.0 for _ in dense),
            _owner=owner,
            static=static,
            split=split,
            _seen=-1,
            _down_eff=down,
            _up_eff=up,
            _uncond_eff=None,
            _gates=None,
            _gates_loaded=False,
            _kept_slots=list(range(len(slots))),
            _row_cache=None,
        )

    def clear(self) -> None:
        self.__dict__.update(
            slots=(), adapters=(), down=None, up=None, _owner=None, _down_eff=None, _up_eff=None, _uncond_eff=None,
            dense=(), _dense_eff=None, _dense_uncond=None, _dense_gains=(), _dense_bias=None, _dense_bias_uncond=None,
            _seen=-1,
        )

    def _refresh(self, owner: GateOwner) -> None:
        state = self.__dict__  # plain dict writes: nn.Module.__setattr__ is slow on a per-step path
        state["_seen"] = owner.gate_version
        gates = owner.gates_for(self)
        key = None if gates is None else tuple(gates)
        if state["_gates_loaded"] and key == state["_gates"]:
            return
        state["_gates"], state["_gates_loaded"] = key, True
        count = len(self.slots)
        low_key = None if key is None else key[:count]
        if self.down is not None:
            kept = self._kept(low_key)
            state["_kept_slots"] = kept
            state["_down_eff"], state["_up_eff"] = self._effective(low_key, kept)
            state["_uncond_eff"] = self._uncond_gains(owner, kept)
        if self.dense:
            gains = tuple(1.0 for _ in self.dense) if key is None else key[count:]
            state["_dense_gains"] = gains
            state["_dense_eff"] = _dense_sum(self.dense, gains)
            state["_dense_bias"] = _bias_sum(self.dense, gains)
            uncond = owner.uncond_gains
            mine = None if uncond is None else [uncond[term.adapter] for term in self.dense]
            uncond_sum = uncond_bias = None
            if mine is not None and any(g != 1.0 for g in mine):  # the unconditional rows use their own sum
                scaled = tuple(g * u for g, u in zip(gains, mine, strict=True))
                uncond_sum, uncond_bias = _dense_sum(self.dense, scaled), _bias_sum(self.dense, scaled)
                if uncond_sum is None:  # every term silent there
                    uncond_sum = torch.zeros_like(self.dense[0].weight)
            state["_dense_uncond"], state["_dense_bias_uncond"] = uncond_sum, uncond_bias

    def _kept(self, key: tuple[float, ...] | None) -> list[int]:
        """The slots that act under per-slot gates ``key`` (zero-gated slots are dropped unless split)."""
        if key is None or self.split:
            return list(range(len(self.slots)))
        return [i for i, g in enumerate(key) if g != 0.0]

    def _effective(self, key: tuple[float, ...] | None,
                   kept: list[int]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The stack to use under per-slot gates ``key``: the ``kept`` slots, gates folded into up."""
        assert self.down is not None and self.up is not None
        if key is None or all(g == 1.0 for g in key):
            return self.down, self.up
        if not kept:
            return None, None
        if len(kept) == 1:  # one adapter left (switch, K-LoRA): views of the stack, no copies
            slot, gain = self.slots[kept[0]], key[kept[0]]
            down, up = self.down[slot.start : slot.stop], self.up[:, slot.start : slot.stop]
            return down, (up if gain == 1.0 else up * gain)
        slots = [self.slots[i] for i in kept]
        if len(slots) == len(self.slots):
            down, up = self.down, self.up
        else:
            down = torch.cat([self.down[s.start : s.stop] for s in slots])
            up = torch.cat([self.up[:, s.start : s.stop] for s in slots], dim=1)
        per_rank = [key[i] for i, slot in zip(kept, slots, strict=True) for _ in range(slot.stop - slot.start)]
        gain = torch.tensor(per_rank, dtype=up.dtype, device=up.device)
        return down, up * (gain.view(1, -1, 1, 1) if self.is_conv else gain)

    def _uncond_gains(self, owner: GateOwner, kept: list[int]) -> torch.Tensor | None:
        """Per-rank gains of the kept slots in the unconditional rows of a guided call (None: all 1)."""
        gains = owner.uncond_gains
        if gains is None or self.up is None:
            return None
        mine = [gains[self.slots[i].adapter] for i in kept]
        if all(g == 1.0 for g in mine):
            return None
        per_rank = [g for i, g in zip(kept, mine, strict=True) for _ in range(self.slots[i].stop - self.slots[i].start)]
        vector = torch.tensor(per_rank, dtype=self.up.dtype, device=self.up.device)
        return vector.view(-1, 1, 1) if self.is_conv else vector

    def _project_down(self, x: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
        if self.is_conv:
            stride, padding, dilation = self._conv_args
            return F.conv2d(x, down, None, stride, padding, dilation)
        return F.linear(x, down)

    def _project_up(self, h: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.conv2d(h, up) if self.is_conv else F.linear(h, up)

    def _guide(self, h: torch.Tensor, owner: GateOwner) -> torch.Tensor:
        """Scale the unconditional rows of a guided call's low-rank activations by their gains (in place)."""
        rows = owner.guided_rows
        if rows and self._uncond_eff is not None and h.shape[0] == 2 * rows:
            h[:rows] *= self._uncond_eff.to(h.dtype)
        return h

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each adapter's own (scaled, gated) output at this layer, in ``adapters`` order."""
        assert self._owner is not None
        outputs: list[torch.Tensor] = []
        if self._down_eff is not None and self._up_eff is not None:
            down, up = self._cast(x)
            h = self._guide(self._project_down(x, down), self._owner)
            channel = 1 if self.is_conv else -1
            outputs = [
                self._project_up(h.narrow(channel % h.dim(), s.start, s.stop - s.start), up[:, s.start : s.stop])
                for s in self.slots
            ]
        uncond = self._owner.uncond_gains
        rows = self._owner.guided_rows
        for term, gain in zip(self.dense, self._dense_gains, strict=True):
            out = self._project_full(x, term.weight.to(x.dtype) * gain,
                                     None if term.bias is None else term.bias.to(x.dtype) * gain)
            u = 1.0 if uncond is None else uncond[term.adapter]
            if rows and u != 1.0 and out.shape[0] == 2 * rows:
                out[:rows] *= u
            outputs.append(out)
        return outputs

    def _row_segments(self, owner: GateOwner, rows: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """Per kept rank slot: (start, stop) in the effective stack, the rows that use its adapter, and each such
        row's multiplier (its coefficient, times the adapter's unconditional gain on the unconditional rows)."""
        assert owner.row_coeffs is not None
        key = (owner.row_version, owner.gate_version, rows, owner.guided_rows)
        if self._row_cache is not None and self._row_cache[0] == key:
            return self._row_cache[1]  # type: ignore[return-value]
        coeffs = owner.row_coeffs["unet" if self.target.startswith("unet.") else "text"]
        if rows % coeffs.shape[0]:
            raise RuntimeError(f"{self.target}: a batch of {rows} rows for {coeffs.shape[0]} requests")
        requests = torch.arange(rows, device=coeffs.device) % coeffs.shape[0]
        guided = owner.guided_rows if rows == 2 * owner.guided_rows else 0
        uncond = owner.uncond_gains
        segments: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        start = 0
        for index in self._kept_slots:
            slot = self.slots[index]
            stop = start + slot.stop - slot.start
            weights = coeffs[requests, slot.adapter]
            if guided and uncond is not None and uncond[slot.adapter] != 1.0:
                weights = weights.clone()
                weights[:guided] *= uncond[slot.adapter]
            used = torch.nonzero(weights, as_tuple=True)[0]
            if used.numel():
                segments.append((start, stop, used, weights[used]))
            start = stop
        self.__dict__["_row_cache"] = (key, segments)
        return segments

    def _row_stack(self, owner: GateOwner, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, its own adapters' factors gathered (BGMV-style): down ``[rows, R, in]`` and up ``[rows, out, R]``
        with the row's coefficients (and unconditional gains) folded into up, padded with zeros to the largest
        row's rank R. One batched product then costs each row its own rank, not the union's."""
        key = ("stack", owner.row_version, owner.gate_version, rows, owner.guided_rows)
        if self._row_cache is not None and self._row_cache[0] == key:
            return self._row_cache[1]  # type: ignore[return-value]
        assert self._down_eff is not None and self._up_eff is not None
        segments = self._row_segments(owner, rows)
        per_row: list[list[tuple[int, int, float]]] = [[] for _ in range(rows)]
        for start, stop, used, weights in segments:
            for row, weight in zip(used.tolist(), weights.tolist(), strict=True):
                per_row[row].append((start, stop, weight))
        width = max((sum(stop - start for start, stop, _ in row) for row in per_row), default=0) or 1
        down, up = self._down_eff, self._up_eff
        downs = down.new_zeros(rows, width, down.shape[1])
        ups = up.new_zeros(rows, up.shape[0], width)
        for row, parts in enumerate(per_row):
            offset = 0
            for start, stop, weight in parts:
                size = stop - start
                downs[row, offset : offset + size] = down[start:stop]
                ups[row, :, offset : offset + size] = up[:, start:stop] * weight
                offset += size
        self.__dict__["_row_cache"] = (key, (downs, ups))
        return downs, ups

    def _forward_rows(self, out: torch.Tensor, x: torch.Tensor, owner: GateOwner) -> torch.Tensor:
        """A heterogeneous batch (:mod:`fusion.rows`): each adapter's factors act on the rows that use it, at each
        row's coefficient, so a row costs what its own adapters cost (not the whole union's rank)."""
        assert owner.row_coeffs is not None
        rows = x.shape[0]
        total = out if not out.requires_grad and out.is_contiguous() else out.clone()
        if self._down_eff is not None and not self.is_conv:
            downs, ups = self._row_stack(owner, rows)
            flat = x.reshape(rows, -1, x.shape[-1])
            h = torch.bmm(flat, downs.transpose(1, 2).to(x.dtype))
            total = total + torch.bmm(h, ups.transpose(1, 2).to(x.dtype)).reshape(out.shape)
        elif self._down_eff is not None:
            down, up = self._cast(x)
            for start, stop, used, weights in self._row_segments(owner, rows):
                part = x.index_select(0, used)
                h = self._project_down(part, down[start:stop])
                h.mul_(weights.to(h.dtype).view(-1, *([1] * (h.dim() - 1))))
                total.index_add_(0, used, self._project_up(h, up[:, start:stop]))
        if self.dense:
            coeffs = owner.row_coeffs["unet" if self.target.startswith("unet.") else "text"]
            index = torch.arange(rows, device=coeffs.device) % coeffs.shape[0]
            uncond = owner.uncond_gains
            for term, gain in zip(self.dense, self._dense_gains, strict=True):
                if gain == 0.0:
                    continue
                d = self._project_full(x, term.weight.to(x.dtype) * gain,
                                       None if term.bias is None else term.bias.to(x.dtype) * gain)
                scale = coeffs[index, term.adapter].to(d.dtype)
                d = d * scale.view(rows, *([1] * (d.dim() - 1)))
                u = 1.0 if uncond is None else uncond[term.adapter]
                if owner.guided_rows and u != 1.0 and rows == 2 * owner.guided_rows:
                    d[: owner.guided_rows] *= u
                total = total + d
        return total

    def _project_full(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.is_conv:
            stride, padding, dilation = self._conv_args
            return F.conv2d(x, weight, bias, stride, padding, dilation)
        return F.linear(x, weight, bias)

    def _add_dense(self, out: torch.Tensor, x: torch.Tensor, owner: GateOwner) -> torch.Tensor:
        assert self._dense_eff is not None
        bias = None if self._dense_bias is None else self._dense_bias.to(x.dtype)
        d = self._project_full(x, self._dense_eff.to(x.dtype), bias)
        rows = owner.guided_rows
        if rows and self._dense_uncond is not None and d.shape[0] == 2 * rows:
            uncond_bias = None if self._dense_bias_uncond is None else self._dense_bias_uncond.to(x.dtype)
            d[:rows] = self._project_full(x[:rows], self._dense_uncond.to(x.dtype), uncond_bias)
        if out.requires_grad or out.dtype != d.dtype:
            return out + d
        return out.add_(d)

    def _cast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._down_eff is not None and self._up_eff is not None
        if self._down_eff.dtype != x.dtype:
            return self._down_eff.to(x.dtype), self._up_eff.to(x.dtype)
        return self._down_eff, self._up_eff

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        owner = self._owner
        if owner is None:
            return out
        if not self.static and self._seen != owner.gate_version:
            self._refresh(owner)
        if self._down_eff is None and self._dense_eff is None and not (self.dense and owner.row_coeffs is not None):
            return out
        if owner.row_coeffs is not None:
            return self._forward_rows(out, x, owner)
        if self.split:
            return owner.combine(self, out, self.outputs(x))
        if self._dense_eff is not None:
            out = self._add_dense(out, x, owner)
        if self._down_eff is None:
            return out
        down, up = self._cast(x)
        h = self._project_down(x, down)
        if owner.guided_rows:
            h = self._guide(h, owner)
        if out.requires_grad or not out.is_contiguous() or out.dtype != h.dtype:
            return out + self._project_up(h, up)
        if self.is_conv:
            return out.add_(F.conv2d(h, up))
        out.view(-1, out.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), up.t())  # one fused GEMM + add
        return out


def _dense_sum(dense: tuple[DenseTerm, ...], gains: tuple[float, ...] | None) -> torch.Tensor | None:
    """``sum_j g_j D_j`` over the terms whose gate is not 0 (None when none acts)."""
    total: torch.Tensor | None = None
    for index, term in enumerate(dense):
        gain = 1.0 if gains is None else gains[index]
        if gain == 0.0:
            continue
        part = term.weight if gain == 1.0 else term.weight * gain
        total = part.clone() if total is None else total + part
    return total


def _bias_sum(dense: tuple[DenseTerm, ...], gains: tuple[float, ...] | None) -> torch.Tensor | None:
    """``sum_j g_j b_j`` over the terms that update the bias (None when none does)."""
    total: torch.Tensor | None = None
    for index, term in enumerate(dense):
        gain = 1.0 if gains is None else gains[index]
        if term.bias is None or gain == 0.0:
            continue
        part = term.bias * gain
        total = part if total is None else total + part
    return total
