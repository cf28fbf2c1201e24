"""Per-step weight curves: a multiplier as a function of the fraction of sampling done.

``p`` is the fraction of denoising done: 0 at the first (noisiest) step, approaching 1
at the last. A :class:`Schedule` is a list of ``(fraction, value)`` points, either
linearly interpolated (a curve) or held constant from each point to the next (a
step function; windows are built this way). Outside the points a curve holds its end
values; a step function is 0 before its first point.

Text forms (used by the prompt syntax ``<lora:alias:0.8@...>``)::

    0.5          active from 50% of sampling to the end        (window)
    0.2-0.6      active for 20% <= p < 60%                      (window)
    50%-100%     the same with percentages
    0=1,0.5=0.2,1=0   a curve through (0, 1), (0.5, 0.2), (1, 0) (linear)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_POSITION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%?)\s*$")
_NUMBER = re.compile(r"^\s*[-+]?[0-9]*\.?[0-9]+\s*$")


def parse_position(text: str) -> float:
    """``0.5`` or ``50%`` -> 0.5; must lie in [0, 1]."""
    match = _POSITION.match(text)
    if not match:
        raise ValueError(f"bad schedule position {text!r}: write a fraction such as 0.5 or a percentage such as 50%")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"schedule position {text!r} is outside [0, 1]")
    return value


@dataclass(frozen=True)
class Schedule:
    """A multiplier over the fraction of sampling done (see the module docstring)."""

    points: tuple[tuple[float, float], ...]
    step: bool = False

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a schedule needs at least one (fraction, value) point")
        fractions = [f for f, _ in self.points]
        if fractions != sorted(fractions):
            raise ValueError(f"schedule points must be sorted by fraction, got {fractions}")
        for f, v in self.points:
            if not 0.0 <= f <= 1.0:
                raise ValueError(f"schedule fraction {f} is outside [0, 1]")
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError("schedule values must be finite")

    @classmethod
    def curve(cls, points: Iterable[Sequence[float]]) -> Schedule:
        """Linear interpolation through ``(fraction, value)`` points."""
        return cls(tuple((float(f), float(v)) for f, v in points), step=False)

    @classmethod
    def window(cls, start: float = 0.0, end: float = 1.0, value: float = 1.0) -> Schedule:
        """``value`` for ``start <= p < end`` (``end`` 1 means to the last step), 0 elsewhere."""
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"a window needs 0 <= start < end <= 1, got {start}-{end}")
        points = [(start, value)] if end >= 1.0 else [(start, value), (end, 0.0)]
        return cls(tuple(points), step=True)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read the text forms of the module docstring."""
        text = text.strip()
        if "=" in text:
            points = []
            for part in text.split(","):
                position, _, value = part.partition("=")
                if not _NUMBER.match(value):
                    raise ValueError(f"bad curve point {part!r}: write fraction=value, e.g. 0.5=0.2")
                points.append((parse_position(position), float(value)))
            return cls.curve(sorted(points))
        start, dash, end = text.partition("-")
        return cls.window(parse_position(start), parse_position(end) if dash else 1.0)

    def __call__(self, fraction: float) -> float:
        fractions = [f for f, _ in self.points]
        if self.step:
            index = bisect.bisect_right(fractions, fraction) - 1
            return self.points[index][1] if index >= 0 else 0.0
        if fraction <= fractions[0]:
            return self.points[0][1]
        if fraction >= fractions[-1]:
            return self.points[-1][1]
        index = bisect.bisect_right(fractions, fraction)
        (f0, v0), (f1, v1) = self.points[index - 1], self.points[index]
        return v0 if f1 == f0 else v0 + (v1 - v0) * (fraction - f0) / (f1 - f0)

    def to_text(self) -> str:
        """The text form; :meth:`parse` reads it back for curves and for windows of value 1."""
        if self.step:
            (start, first), *rest = self.points
            if first == 1.0 and not rest:
                return f"{start:g}"
            if first == 1.0 and len(rest) == 1 and rest[0][1] == 0.0:
                return f"{start:g}-{rest[0][0]:g}"
            return "step:" + ",".join(f"{f:g}={v:g}" for f, v in self.points)
        return ",".join(f"{f:g}={v:g}" for f, v in self.points)


ScheduleLike = Schedule | str | Sequence[Sequence[float]]


def as_schedule(value: ScheduleLike | None) -> Schedule | None:
    """Accept a Schedule, its text form, or a list of (fraction, value) points."""
    if value is None or isinstance(value, Schedule):
        return value
    if isinstance(value, str):
        return Schedule.parse(value)
    return Schedule.curve(value)
