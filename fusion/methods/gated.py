"""Gated fusion: per-layer, per-step weights for content and style adapters.

(a) Training-free schedule (default). Content decides layout and identity at the noisy
early steps; style paints texture and colour once the layout stands (the observation behind
B-LoRA, Frenkel et al. 2024, and the timestep analysis of Zhong et al. 2024). Adapter i with
role r gets

    g_i(layer, t) = curve_r(p) * blocks_r(layer)

with ``curve_r`` a :class:`~fusion.schedule.Schedule` over the fraction of sampling done
(``(fraction, weight)`` points, linearly interpolated) and ``blocks_r`` diffusers-style
block weights; all editable (``content_curve=``, ``style_curve=``, ``content_blocks=``,
``style_blocks=``...). An adapter's own ``schedule`` / ``block_weights`` replace its role's.

The defaults (content at full weight throughout; style off for the first 10% of sampling and at
full weight from 30% on; every block at 1) were chosen with the judge on the trained gate's
training pairs only, by ``python -m training.schedule_curves``; the figures are in the README
("How the gated defaults were chosen").

(b) Trained gate (``gate=True`` for ``assets/fusion-gate``, a path, or a
:class:`~fusion.gate.FusionGate`): AutoLoRA's fine-grained gated fusion (see
:mod:`fusion.gate`), y = o + sum_i w_out * g_i * o_i with g_i per output channel from the
layer's base output, the adapter's output and the timestep. Layers the gate does not
cover take the plain sum. The role schedule is off with a gate unless ``schedule=True``.
Each adapter is applied at its weight times its role's strength under the gate
(``strengths=``, default the gate's own tuned ``strengths``; see :mod:`fusion.gate`).

(c) Adapter guidance, with either (``uncond=``, :mod:`fusion.guidance`): in a guided
pipeline call each role's adapters act in the unconditional half of classifier-free guidance
at a gain (1 as every loader does; 0: only in the conditional half, so guidance amplifies the
adapter as it does the prompt). ``uncond={}`` turns it off. The defaults (content 0.5, style 0.75)
were chosen by ``python -m training.guidance_gains`` on the same training pairs; figures in the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion import blocks
from fusion.context import StepContext
from fusion.gate import FusionGate, resolve_gate
from fusion.guidance import validate_gains
from fusion.layer import FusedLayer
from fusion.methods.base import FusionMethod
from fusion.schedule import Schedule, ScheduleLike, as_schedule
from fusion.spec import AdapterSpec
from library.vocabulary import ROLES

DEFAULT_CURVES: dict[str, ScheduleLike] = {
    "content": [(0.0, 1.0), (1.0, 1.0)],
    "style": [(0.0, 0.0), (0.1, 0.0), (0.3, 1.0), (1.0, 1.0)],
}
# every block at 1 (None); the per-block weights stay editable
DEFAULT_BLOCKS: dict[str, blocks.BlockWeights | None] = {"content": None, "style": None}
# how strongly each role acts in the unconditional half of guidance (see fusion.guidance)
DEFAULT_UNCOND: dict[str, float] = {"content": 0.5, "style": 0.75}


class GatedMethod(FusionMethod):
    name = "gated"
    time_dependent = True

    def __init__(
        self,
        content_curve: ScheduleLike | None = DEFAULT_CURVES["content"],
        style_curve: ScheduleLike | None = DEFAULT_CURVES["style"],
        other_curve: ScheduleLike | None = None,
        content_blocks: blocks.BlockWeights | None = DEFAULT_BLOCKS["content"],
        style_blocks: blocks.BlockWeights | None = DEFAULT_BLOCKS["style"],
        other_blocks: blocks.BlockWeights | None = None,
        gate: FusionGate | str | Path | bool | None = None,
        schedule: bool | None = None,
        strengths: Mapping[str, float] | None = None,
        uncond: Mapping[str, float] | None = DEFAULT_UNCOND,
    ) -> None:
        self.curves: dict[str, Schedule | None] = {
            "content": as_schedule(content_curve),
            "style": as_schedule(style_curve),
            "other": as_schedule(other_curve),
        }
        self.blocks = {"content": content_blocks, "style": style_blocks, "other": other_blocks}
        for weights in self.blocks.values():
            blocks.validate(weights)
        self.gate = resolve_gate(gate)
        self.use_schedule = self.gate is None if schedule is None else bool(schedule)
        chosen = strengths if strengths is not None else (self.gate.strengths if self.gate is not None else {})
        self.strengths = {str(role): float(value) for role, value in chosen.items()}
        for role, value in self.strengths.items():
            if role not in self.curves or not value >= 0:
                raise ValueError(f"gated: strengths take roles content/style/other and values >= 0, got {role}={value}")
        self.uncond = validate_gains(uncond or {}, ROLES, "gated: uncond")
        self._roles: list[str] = []
        self._curves: list[Schedule | None] = []
        self._time_version = -1
        self._time: torch.Tensor | None = None

    def options(self) -> dict[str, Any]:
        record: dict[str, Any] = {"trained_gate": self.gate is not None, "schedule": self.use_schedule}
        if self.gate is not None and self.strengths:
            record["strengths"] = dict(sorted(self.strengths.items()))
        if self.guided:
            record["uncond"] = dict(sorted(self.uncond.items()))
        if self.use_schedule:
            record["curves"] = {role: c.to_text() for role, c in self.curves.items() if c is not None}
            record["blocks"] = {role: b for role, b in self.blocks.items() if b is not None}
        return record

    def prepare(self, specs: list[AdapterSpec], components: Mapping[str, nn.Module]) -> list[AdapterSpec]:
        unet = components.get("unet")
        for weights in self.blocks.values():
            blocks.validate(weights, unet)
        self._curves = [
            self.curves[spec.role] if self.use_schedule and spec.schedule is None else None for spec in specs
        ]
        self._roles = [spec.role for spec in specs]
        if self.gate is not None and unet is not None:
            device = next(unet.parameters()).device
            self.gate.to(device)
        self._time_version = -1
        return specs

    def static_gain(self, index: int, spec: AdapterSpec, component: str, path: str) -> float:
        if component != "unet":
            return 1.0
        strength = self.strengths.get(spec.role, 1.0) if self.gate is not None else 1.0
        if not self.use_schedule or spec.block_weights is not None:
            return strength
        return strength * blocks.multiplier(self.blocks[spec.role], "unet", path)

    @property
    def guided(self) -> bool:
        """Whether some role acts in the unconditional half at other than full strength."""
        return any(gain != 1.0 for gain in self.uncond.values())

    def step_gates(self, context: StepContext, count: int) -> list[float] | None:
        if not any(curve is not None for curve in self._curves):
            return None
        return [1.0 if curve is None else curve(context.fraction) for curve in self._curves]

    def uncond_gains(self) -> list[float] | None:
        return [self.uncond.get(role, 1.0) for role in self._roles] if self.guided else None

    def splits(self, component: str, path: str) -> bool:
        return self.gate is not None and component == "unet" and f"unet.{path}" in self.gate

    @property
    def batches(self) -> bool:
        return self.gate is None  # the schedule is per role and step; the trained gate mixes a layer's adapters

    def combine(
        self, layer: FusedLayer, base_out: torch.Tensor, outputs: list[torch.Tensor], context: StepContext
    ) -> torch.Tensor:
        assert self.gate is not None
        if self._time is None or self._time_version != context.version or self._time.device != base_out.device:
            self._time = self.gate.time(context.timestep, base_out.device)
            self._time_version = context.version
        channel_dim = 1 if layer.is_conv else -1
        return self.gate.layer(layer.target)(base_out, outputs, self._time, channel_dim)
