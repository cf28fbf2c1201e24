"""Does the saved adapter index match the catalogue? For ``medley doctor``; it only reads.

The index (``MEDLEY_HOME/index``, :mod:`retrieval.index`) is rebuilt or brought up to date by the next
search, so a stale one is not an error, only slower to open; an unreadable one is reported as
unhealthy. The check compares what the default retriever of ``medley search`` would want: its
embedder, the catalogue's adapter ids, and each adapter's key (file hash + the description that was
embedded). A description holds its previews' zero-shot tags, so the keys are checked for adapters
whose tags are cached beside the index (:class:`~retrieval.preview_tags.TagStore`) or need none;
the toy CLIP is never run here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from library.records import AdapterRecord
from retrieval.index import AdapterIndex, entry_key, read_header
from retrieval.preview_tags import preview_tagger
from retrieval.refiner import describe, description_hash

INDEX_NAME = "adapters"
OK, MISSING, STALE, UNHEALTHY = "ok", "missing", "stale", "unhealthy"


@dataclass(frozen=True)
class IndexHealth:
    path: str
    status: str  # OK, MISSING (the first search builds it), STALE (the next search updates it) or UNHEALTHY
    message: str
    entries: int | None = None
    embedder: str | None = None
    expected_embedder: str | None = None
    missing: tuple[int, ...] = ()  # in the catalogue, not in the index
    extra: tuple[int, ...] = ()  # in the index, not in the catalogue
    changed: tuple[int, ...] = ()  # file or description changed since it was embedded
    unchecked: tuple[int, ...] = field(default=())  # keys not checked: preview tags not cached

    @property
    def healthy(self) -> bool:
        return self.status != UNHEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "healthy": self.healthy, "message": self.message,
                "entries": self.entries, "embedder": self.embedder, "expected_embedder": self.expected_embedder,
                "missing": list(self.missing), "extra": list(self.extra), "changed": list(self.changed),
                "unchecked": list(self.unchecked)}


def _default_embedder_name() -> str | None:
    from retrieval.embedders.text import EmbedderUnavailableError, TextEmbedder

    try:
        return TextEmbedder().name
    except EmbedderUnavailableError:
        return None


def _wanted_keys(directory: Path, records: Sequence[AdapterRecord]) -> tuple[dict[int, str], list[int]]:
    """{id: key} the default retriever would want, for the adapters whose description is known without CLIP."""
    tagger = preview_tagger(cache_dir=directory)
    keys: dict[int, str] = {}
    unknown: list[int] = []
    for record in records:
        tags = [] if tagger is None else tagger.cached_tags(record)
        if tags is None:
            unknown.append(record.id)
            continue
        text = describe(record) if tagger is None else describe(record, extra_tags=tags)
        keys[record.id] = entry_key(record.sha256, description_hash(text))
    return keys, unknown


def check_index(home: Path, catalogue_ids: Sequence[int], records: Sequence[AdapterRecord] | None = None,
                name: str = INDEX_NAME) -> IndexHealth:
    """Compare the index under ``home/index`` with the catalogue's ids (and, given ``records``, their keys)."""
    directory = Path(home) / "index"
    header = read_header(directory, name)
    where = str(directory)
    if header is None:
        if (directory / f"{name}.json").exists():
            return IndexHealth(where, UNHEALTHY, "its header is unreadable; the next search rebuilds the index")
        return IndexHealth(where, MISSING, "no index yet; the first search builds it")
    try:
        index = AdapterIndex._from_header(directory, header)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        return IndexHealth(where, UNHEALTHY, f"unreadable ({error}); the next search rebuilds it")
    expected = _default_embedder_name()
    wanted = set(catalogue_ids)
    have = set(index.keys)
    facts: dict[str, Any] = {"entries": len(index), "embedder": index.embedder_name, "expected_embedder": expected,
                             "missing": tuple(sorted(wanted - have)), "extra": tuple(sorted(have - wanted))}
    if expected is not None and index.embedder_name != expected:
        return IndexHealth(where, STALE, f"built by {index.embedder_name}; the next search rebuilds it for {expected}",
                           **facts)
    changed: list[int] = []
    unknown: list[int] = []
    if records is not None:
        keys, unknown = _wanted_keys(directory, records)
        changed = sorted(i for i, key in keys.items() if i in index.keys and index.keys[i] != key)
    facts |= {"changed": tuple(changed), "unchecked": tuple(sorted(unknown))}
    if facts["missing"] or facts["extra"] or changed:
        counts = [f"{len(facts[k])} {k}" for k in ("missing", "extra") if facts[k]]
        counts += [f"{len(changed)} changed"] if changed else []
        return IndexHealth(where, STALE, f"{', '.join(counts)}; the next search brings it up to date", **facts)
    message = f"{len(index)} entries match the catalogue"
    if records is None:
        message += " by id (descriptions not checked)"
    elif unknown:
        message += f" ({len(unknown)} descriptions not checked: their preview tags are not cached)"
    return IndexHealth(where, OK, message, **facts)
