"""The shared timestep context: where sampling stands, read by every fused layer.

On the product path the pipeline drives it: before a run the session is given the run's
timesteps (:meth:`StepContext.drive`), and the pipeline's step callback moves it to the next
step (:meth:`StepContext.at`); nothing is read from the UNet's inputs. For a UNet called
outside a pipeline run (training with random timesteps, a hand-written loop) a forward
pre-hook hands the call's ``timestep`` to :meth:`StepContext.observe` instead. Layers never
walk or get told anything: they compare the session's gate version with the one they cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class StepContext:
    """Where sampling stands.

    ``step``: index of the current timestep in the scheduler's ``timesteps`` (-1 before the
    first UNet call); ``num_steps``: their count; ``fraction``: ``step / num_steps`` (0 at the
    first step). When the timestep is not in the schedule (training with random timesteps,
    a hand-written loop), ``fraction`` is ``1 - t / num_train_timesteps`` (batch mean).
    ``timestep`` is the raw value (a float, or a tensor when a batch carries several).
    ``solo``: the adapter that alone is active during a composite pass (None otherwise).
    """

    num_inference_steps: int | None = None
    num_train_timesteps: int = 1000
    step: int = -1
    num_steps: int = 1
    fraction: float = 0.0
    timestep: float | torch.Tensor | None = None
    solo: int | None = None
    version: int = 0
    _schedule: list[float] = field(default_factory=list)
    _schedule_source: Any = None

    driven: bool = False  # a pipeline run is telling the steps (observe() then does nothing)

    def reset(self) -> None:
        self.step, self.fraction, self.timestep, self.solo = -1, 0.0, None, None
        self._schedule_source = None
        self.driven = False
        self.version += 1

    def drive(self, timesteps: Sequence[float]) -> None:
        """A pipeline run over ``timesteps`` starts: stand at its first step."""
        self._schedule = [float(t) for t in timesteps]
        self._schedule_source = None
        self.driven = True
        self.step = -1
        self.at(0)

    def at(self, index: int) -> bool:
        """Stand at step ``index`` of the driven run (past the end: stay at the last); whether it moved."""
        num = len(self._schedule) or 1
        index = min(max(index, 0), num - 1)
        timestep = self._schedule[index] if self._schedule else None
        changed = index != self.step or timestep != self.timestep or num != self.num_steps
        self.step, self.num_steps, self.fraction, self.timestep = index, num, index / num, timestep
        if changed:
            self.version += 1
        return changed

    def release(self) -> None:
        """The driven run ended: UNet calls are observed again."""
        self.driven = False

    def _timesteps(self, scheduler: Any) -> list[float]:
        source = getattr(scheduler, "timesteps", None) if scheduler is not None else None
        if source is not self._schedule_source:
            self._schedule_source = source
            if isinstance(source, torch.Tensor):
                self._schedule = [float(v) for v in source.flatten().tolist()]
            elif isinstance(source, Sequence):
                self._schedule = [float(v) for v in source]
            else:
                self._schedule = []
            self.step = -1  # a new schedule: a new generation
        return self._schedule

    def observe(self, timestep: Any, scheduler: Any = None) -> bool:
        """Take the timestep of a UNet call outside a driven run; return whether the step changed."""
        if timestep is None or self.driven:
            return False
        if isinstance(timestep, torch.Tensor):
            values = timestep.detach().flatten().float()
            if values.numel() == 0:
                return False
            if values.numel() > 1 and not bool((values == values[0]).all()):
                self.timestep = timestep.detach()
                self.fraction = float((1.0 - values / self.num_train_timesteps).clamp(0, 1).mean())
                self.num_steps = self.num_inference_steps or 1000
                self.step = int(round(self.fraction * self.num_steps))
                self.version += 1
                return True
            value = float(values[0])
        else:
            value = float(timestep)
        schedule = self._timesteps(scheduler)
        index = self._locate(schedule, value)
        if index is None:
            num = self.num_inference_steps or len(schedule) or 1000
            fraction = min(max(1.0 - value / self.num_train_timesteps, 0.0), 1.0)
            step = min(int(fraction * num), num - 1)
        else:
            num = len(schedule)
            step, fraction = index, index / num
        changed = step != self.step or value != self.timestep or num != self.num_steps
        self.timestep, self.step, self.num_steps, self.fraction = value, step, num, fraction
        if changed:
            self.version += 1
        return changed

    def _locate(self, schedule: list[float], value: float) -> int | None:
        start = self.step + 1 if self.step >= 0 else 0
        for index in range(start, len(schedule)):  # the next step (usually the very next index)
            if schedule[index] == value:
                return index
        if 0 <= self.step < len(schedule) and schedule[self.step] == value:
            return self.step  # the same step again (separate CFG calls)
        for index in range(min(start, len(schedule))):  # a new run of the same schedule
            if schedule[index] == value:
                return index
        return None
