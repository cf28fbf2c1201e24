"""Per-image adapter sets for a batch with auto adapters (the composer's per-image masks).

The composer (:func:`retrieval.composer.compose`) plans a batch as image 0 with the full plan
and every other image with a seeded subset per concept, re-weighted. The Generate table holds
the full plan (image 0) as "auto" rows; here each image gets those of its own plan, with the
table's edits kept as a factor (a weight the user doubled stays doubled), and the manual rows
unchanged. Consecutive images with the same adapters form one run: one ``generate()`` call
(image i still uses seed ``seed + i``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.web.services import AdapterRow
    from retrieval.plan import Plan, PlannedAdapter

RowKey = tuple[tuple[str, float, str, bool, str], ...]


@dataclass
class ImageRun:
    """Images ``start .. start + count - 1`` of a batch, which compose the same ``rows``."""

    start: int
    count: int
    rows: list[AdapterRow]


def rows_key(rows: Sequence[AdapterRow]) -> RowKey:
    """What makes two adapter sets the same for generation."""
    return tuple((row.name.strip().lower(), row.weight, row.role, row.use, row.source) for row in rows)


def uses_auto(rows: Sequence[AdapterRow]) -> bool:
    return any(row.use and row.source == "auto" for row in rows)


def _weights(adapters: Sequence[PlannedAdapter]) -> dict[str, float]:
    return {adapter.name.lower(): adapter.weight for adapter in adapters}


def image_rows(rows: Sequence[AdapterRow], full: Mapping[str, float], active: Mapping[str, float]
               ) -> list[AdapterRow]:
    """``rows`` for one image: an auto row of the plan is kept only when the image's mask keeps it,
    at the image's weight times the table's edit (table weight / full-plan weight). Other rows stay."""
    out: list[AdapterRow] = []
    for row in rows:
        name = row.name.strip().lower()
        if row.source != "auto" or name not in full:
            out.append(row)
        elif name in active:
            factor = row.weight / full[name] if full[name] else 1.0
            out.append(replace(row, weight=round(active[name] * factor, 4)))
    return out


def rows_per_image(rows: Sequence[AdapterRow], plan: Plan, batch: int) -> list[list[AdapterRow]]:
    """The adapter rows of each of ``batch`` images under ``plan`` (a plan made for that batch size)."""
    if len(plan.images) < batch:
        return [list(rows) for _ in range(batch)]
    full = _weights(plan.adapters)
    return [image_rows(rows, full, _weights(plan.images[index].adapters)) for index in range(batch)]


def image_runs(per_image: Sequence[list[AdapterRow]]) -> list[ImageRun]:
    """Consecutive images with identical adapter rows, grouped."""
    runs: list[ImageRun] = []
    for index, rows in enumerate(per_image):
        if runs and rows_key(runs[-1].rows) == rows_key(rows):
            runs[-1].count += 1
        else:
            runs.append(ImageRun(start=index, count=1, rows=rows))
    return runs
