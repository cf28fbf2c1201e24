"""What to compose: one :class:`AdapterSpec` per adapter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fusion import blocks
from fusion.prompt_syntax import LoraReference
from fusion.schedule import Schedule, ScheduleLike, as_schedule
from library.lora import LoraAdapter
from library.vocabulary import ROLES


@dataclass(init=False, eq=False)
class AdapterSpec:
    """One adapter in a composition.

    ``weight`` multiplies the adapter's own scale (alpha / r) everywhere; ``unet_weight`` and
    ``te_weight`` replace it for the UNet or the text encoder(s) when given (A1111's
    ``unet=``/``te=``). ``block_weights`` are per-block multipliers in diffusers' dict form
    (see :mod:`fusion.blocks`); ``schedule`` a per-step multiplier (a :class:`Schedule`, its
    text form, or ``(fraction, value)`` points). ``role`` (content, style, other) steers the
    methods that treat content and style differently (gated, klora, b4m).
    """

    name: str
    adapter: LoraAdapter
    weight: float = 1.0
    role: str = "other"
    unet_weight: float | None = None
    te_weight: float | None = None
    block_weights: blocks.BlockWeights | None = None
    schedule: Schedule | None = None

    def __init__(
        self,
        name: str,
        adapter: LoraAdapter,
        weight: float = 1.0,
        role: str = "other",
        unet_weight: float | None = None,
        te_weight: float | None = None,
        block_weights: blocks.BlockWeights | None = None,
        schedule: ScheduleLike | None = None,
    ) -> None:
        if not name:
            raise ValueError("an adapter spec needs a name")
        if role not in ROLES:
            raise ValueError(f"{name}: role must be one of {', '.join(ROLES)}, got {role!r}")
        for label, value in (("weight", weight), ("unet_weight", unet_weight), ("te_weight", te_weight)):
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{name}: {label} must be finite")
        blocks.validate(block_weights)
        self.name = name
        self.adapter = adapter
        self.weight = float(weight)
        self.role = role
        self.unet_weight = None if unet_weight is None else float(unet_weight)
        self.te_weight = None if te_weight is None else float(te_weight)
        self.block_weights = block_weights
        self.schedule = as_schedule(schedule)

    @classmethod
    def from_reference(cls, reference: LoraReference, adapter: LoraAdapter, role: str = "other") -> AdapterSpec:
        """The spec a prompt tag ``<lora:alias:...>`` asks for."""
        return cls(
            name=reference.alias,
            adapter=adapter,
            weight=reference.weight,
            role=role,
            unet_weight=reference.unet_weight,
            te_weight=reference.te_weight,
            schedule=reference.schedule,
        )

    def component_weight(self, component: str) -> float:
        """The weight for ``unet`` or a text encoder."""
        override = self.unet_weight if component == "unet" else self.te_weight
        return self.weight if override is None else override

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record for provenance."""
        record: dict[str, Any] = {"name": self.name, "weight": self.weight, "role": self.role}
        if self.unet_weight is not None:
            record["unet_weight"] = self.unet_weight
        if self.te_weight is not None:
            record["te_weight"] = self.te_weight
        if self.block_weights is not None:
            record["block_weights"] = self.block_weights
        if self.schedule is not None:
            record["schedule"] = self.schedule.to_text()
        return record
