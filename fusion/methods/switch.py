"""LoRA Switch (Zhong et al. 2024, "Multi-LoRA Composition for Image Generation").

One adapter is active at a time; the active one rotates every ``tau`` denoising steps:

    active(step) = floor(step / tau) mod k,    g_i(step) = 1 if i == active(step) else 0

so with tau = 5, adapter i acts at steps [5i, 5i + 5), then the cycle repeats. Only the
UNet switches; text-encoder weights stay merged.
"""

from __future__ import annotations

from typing import Any

from fusion.context import StepContext
from fusion.methods.base import FusionMethod


class SwitchMethod(FusionMethod):
    name = "switch"
    time_dependent = True

    def __init__(self, tau: int = 5) -> None:
        if int(tau) < 1:
            raise ValueError(f"switch: tau must be a positive number of steps, got {tau}")
        self.tau = int(tau)

    def options(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def active(self, step: int, count: int) -> int:
        return (max(step, 0) // self.tau) % count

    def step_gates(self, context: StepContext, count: int) -> list[float] | None:
        if count == 0:
            return None
        active = self.active(context.step, count)
        return [1.0 if i == active else 0.0 for i in range(count)]
