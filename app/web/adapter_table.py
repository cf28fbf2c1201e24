"""The editable adapter table of the Generate tab <-> :class:`~app.web.services.AdapterRow`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from app.web.services import AdapterRow

HEADERS: list[str] = ["use", "adapter", "weight", "role", "source", "concept", "reasons"]
DATATYPES: list[str] = ["bool", "str", "number", "str", "str", "str", "str"]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off")
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def _number(value: Any, default: float = 1.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _as_lists(value: Any) -> list[list[Any]]:
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):  # a pandas DataFrame
        return [list(row) for row in value.values.tolist()]
    if isinstance(value, dict):
        return [list(row) for row in value.get("data") or []]
    return [list(row) for row in value]


def rows_from_table(value: Any) -> list[AdapterRow]:
    """Table value (list of lists, {"headers", "data"} or DataFrame) -> rows; blank rows are dropped."""
    rows: list[AdapterRow] = []
    for cells in _as_lists(value):
        cells = (cells + [None] * len(HEADERS))[: len(HEADERS)]
        use, name, weight, role, source, concept, reasons = cells
        if not _text(name):
            continue
        rows.append(AdapterRow(name=_text(name), weight=_number(weight), role=_text(role), use=_truthy(use),
                               source=_text(source) or "manual", concept=_text(concept), reasons=_text(reasons)))
    return rows


def table_from_rows(rows: Sequence[AdapterRow]) -> list[list[Any]]:
    return [[row.use, row.name, row.weight, row.role, row.source, row.concept, row.reasons] for row in rows]


def manual_rows(rows: Sequence[AdapterRow]) -> list[AdapterRow]:
    return [row for row in rows if row.source != "auto"]
