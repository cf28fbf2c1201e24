"""Per-image picks for a batch with automatic adapters (the composer's per-image masks, Stylus-style).

The composer plans a batch as image 0 with the full plan and every other image with a seeded
subset per concept, re-weighted (:func:`retrieval.composer.batch_masks`). A face may hand back
the full plan edited (the web table's auto rows): here each image gets those of its own plan,
with the edit kept as a factor (a weight the user doubled stays doubled). Auto picks the plan
does not know stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from library.picks import Pick

if TYPE_CHECKING:
    from retrieval.plan import Plan, PlannedAdapter


def _weights(adapters: Sequence[PlannedAdapter]) -> dict[str, float]:
    return {adapter.name.lower(): adapter.weight for adapter in adapters}


def image_picks(picks: Sequence[Pick], full: Mapping[str, float], active: Mapping[str, float]) -> list[Pick]:
    """``picks`` for one image: an auto pick of the plan is kept only when the image's mask keeps it, at the
    image's weight times the edit (given weight / full-plan weight). Other picks stay."""
    out: list[Pick] = []
    for pick in picks:
        if pick.source != "auto" or pick.key not in full:
            out.append(pick)
        elif pick.key in active:
            factor = pick.weight / full[pick.key] if full[pick.key] else 1.0
            out.append(replace(pick, weight=round(active[pick.key] * factor, 4)))
    return out


def picks_per_image(picks: Sequence[Pick], plan: Plan, batch: int) -> list[list[Pick]]:
    """The auto picks of each of ``batch`` images under ``plan`` (a plan made for that batch size)."""
    if len(plan.images) < batch:
        return [list(picks) for _ in range(batch)]
    full = _weights(plan.adapters)
    return [image_picks(picks, full, _weights(plan.images[index].adapters)) for index in range(batch)]
