"""Everything the catalogue records about one adapter file, read from its header and sidecars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from library.base_names import unique
from library.compat import detect_base
from library.errors import AdapterFileError
from library.files import sha256_of
from library.formats.plan import AdapterPlan
from library.formats.reader import plan_file
from library.metadata import AdapterInfo, gather_info
from library.sidecars import Sidecars, find_sidecars


@dataclass
class AdapterFacts:
    """One adapter file as the catalogue sees it (no tensor data loaded)."""

    path: Path
    plan: AdapterPlan
    info: AdapterInfo
    sidecars: Sidecars
    base: str
    sha256: str
    size: int
    mtime_ns: int


def inspect_adapter_file(path: Path, listing: frozenset[str] | set[str] | None = None) -> AdapterFacts:
    """Check ``path`` and describe it; raise :class:`AdapterFileError` (one line) when it is unusable."""
    path = Path(path)
    try:
        before = path.stat()
        plan = plan_file(path)
        sidecars = find_sidecars(path, set(listing) if listing is not None else None)
        info = gather_info(path, plan.metadata, sidecars)
        digest = sha256_of(path)
        after = path.stat()
    except OSError as error:
        raise AdapterFileError(f"{path.name}: cannot be read ({error.strerror or error})") from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise AdapterFileError(f"{path.name}: changed while it was being read; try again")
    # what the metadata and sidecars say first, then what the key spelling suggests (kohya te1/te2: SDXL)
    base = detect_base(plan.shapes(), unique([*info.base_hints, *plan.hints]))
    if plan.tokens:  # a textual inversion's tokens are what a prompt writes to use it
        info.triggers = unique([*plan.tokens, *info.triggers])
    return AdapterFacts(path=path, plan=plan, info=info, sidecars=sidecars, base=base, sha256=digest,
                        size=after.st_size, mtime_ns=after.st_mtime_ns)
