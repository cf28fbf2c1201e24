"""A :class:`Pick`: one adapter someone (a prompt tag, a hand pick, the automatic plan) asked for.

It travels typed from the faces and from retrieval's plan to the core render service
(:class:`pipeline.studio.Studio`), which resolves it against the catalogue into the fusion
engine's ``AdapterSpec``. Precedence when the same adapter is picked twice: a prompt tag
beats a hand pick, which beats the automatic plan (:data:`SOURCES`, strongest first).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from library.vocabulary import ROLES

SOURCES: tuple[str, ...] = ("tag", "manual", "auto")  # strongest first


@dataclass(frozen=True)
class Pick:
    """``name`` (catalogue name or id), ``weight``, ``role`` (None: the catalogue kind), ``source``,
    ``schedule`` (the text form of a per-step schedule, as after ``@`` in a tag), and A1111's separate
    text-encoder / UNet weights. ``concept`` and ``reasons`` say why the plan chose it (auto picks)."""

    name: str
    weight: float = 1.0
    role: str | None = None
    source: str = "manual"
    schedule: str | None = None
    te_weight: float | None = None
    unet_weight: float | None = None
    concept: str = ""
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a pick needs an adapter name")
        if self.source not in SOURCES:
            raise ValueError(f"pick source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"{self.name}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        for label, value in (("weight", self.weight), ("te_weight", self.te_weight), ("unet_weight", self.unet_weight)):
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{self.name}: {label} must be a finite number")

    @property
    def key(self) -> str:
        """What makes two picks the same adapter (names are case-insensitive)."""
        return self.name.strip().lower()

    @property
    def rank(self) -> int:
        """Precedence: lower wins."""
        return SOURCES.index(self.source)

    def to_dict(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if v not in (None, "", ())}
        record["reasons"] = list(self.reasons) if self.reasons else record.pop("reasons", None)
        return {k: v for k, v in record.items() if v is not None}


def merge_picks(*groups: list[Pick] | tuple[Pick, ...]) -> list[Pick]:
    """Each adapter once, from its strongest source (ties: the first given), in first-seen order."""
    chosen: dict[str, Pick] = {}
    for pick in (pick for group in groups for pick in group):
        known = chosen.get(pick.key)
        if known is None or pick.rank < known.rank:
            chosen[pick.key] = pick
    order: dict[str, int] = {}
    for pick in (pick for group in groups for pick in group):
        order.setdefault(pick.key, len(order))
    return sorted(chosen.values(), key=lambda pick: order[pick.key])
