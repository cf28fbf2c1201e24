"""A scan's refused files as rows a person reads: the file (relative to the scanned folder) and why."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from library.files import FileProblem


def refusal_rows(folder: str | Path, problems: Iterable[FileProblem]) -> list[tuple[str, str]]:
    """[(file relative to ``folder``, reason)] sorted by file; the reason drops the "<name>: " it starts with."""
    root = Path(folder)
    rows: list[tuple[str, str]] = []
    for problem in problems:
        path = Path(problem.path)
        try:
            shown = path.relative_to(root).as_posix()
        except ValueError:
            shown = str(path)
        reason = problem.message.removeprefix(f"{path.name}: ")
        rows.append((shown, reason))
    return sorted(rows)
