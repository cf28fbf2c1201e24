"""The adapter catalogue: SQLite (WAL) at ``MEDLEY_HOME/catalog.sqlite``.

One row per :class:`~library.records.AdapterRecord`. Folders are scanned in place
(incrementally: a file is re-read only when its size or mtime changed); single files
are imported by copying them (and their sidecars) into ``MEDLEY_HOME/adapters``; the
originals are never modified. Every change bumps :attr:`Catalog.revision`, and
:meth:`Catalog.changed_since` tells other layers (the retrieval index) what changed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from library.catalog_db import connect, record_from_row, row_values
from library.errors import AdapterFileError, AdapterNotFoundError, DuplicateAdapterError, LibraryError
from library.files import (
    ADAPTER_SUFFIX,
    Candidate,
    FileProblem,
    check_link,
    find_adapter_files,
    is_within,
    sha256_of,
    sweep_temporaries,
)
from library.formats.header import refuse_pickled_suffix
from library.formats.peft import config_path_beside
from library.formats.reader import read_adapter
from library.home import medley_home
from library.importing import main_file_of, publish, staged
from library.inspection import AdapterFacts, inspect_adapter_file
from library.lora import LoraAdapter
from library.metadata import alias
from library.records import BASES, KINDS, AdapterRecord
from library.sidecars import PEFT_CONFIG_SUFFIX, SIDECAR_SUFFIXES

STARTER_DIR = Path(__file__).resolve().parents[1] / "assets" / "starter-library"
DEFAULT_WEIGHT = 0.8
EDITABLE_FIELDS: tuple[str, ...] = ("triggers", "preferred_weight", "kind", "notes", "description", "title")
ScanProgress = Callable[[int, int, str], None]  # (files done, files in all, current path)
_BATCH = 200


@dataclass(frozen=True)
class CatalogChange:
    """One change to the catalogue: ``action`` is added, updated (file changed), edited or removed."""

    revision: int
    action: str
    adapter_id: int
    name: str


@dataclass
class ScanReport:
    folder: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, name already catalogued)
    problems: list[FileProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files_seen(self) -> int:
        return len(self.added) + len(self.updated) + self.unchanged + len(self.duplicates) + len(self.problems)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _record_from_facts(facts: AdapterFacts, source: str, path: Path) -> AdapterRecord:
    info = facts.info
    return AdapterRecord(
        id=0,
        sha256=facts.sha256,
        name=info.name,
        title=info.title,
        path=str(path),
        format=facts.plan.format,
        base=facts.base,
        rank=facts.plan.rank,
        targets=sorted(facts.plan.modules),
        triggers=list(info.triggers),
        tags=list(info.tags),
        description=info.description,
        preferred_weight=info.preferred_weight if info.preferred_weight is not None else DEFAULT_WEIGHT,
        kind=info.kind or "other",
        previews=list(info.previews),
        added_at=_now(),
        notes=info.notes,
        source=source,
        size=facts.size,
        mtime=facts.mtime_ns / 1e9,
        family=facts.plan.family,
    )


def _edited_value(key: str, value: object) -> object:
    """The column value of an edited field, checked."""
    if key == "triggers":
        if isinstance(value, str) or not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise LibraryError("triggers must be a list of words")
        return json.dumps([" ".join(word.split()) for word in value if word.strip()])
    if key == "preferred_weight":
        try:
            weight = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise LibraryError(f"weight {value!r} is not a number") from None
        if not math.isfinite(weight) or abs(weight) > 10:
            raise LibraryError(f"weight {value} is not a number between -10 and 10")
        return weight
    if key == "kind" and value not in KINDS:
        raise LibraryError(f"unknown kind {value!r} (one of {', '.join(KINDS)})")
    return str(value)


def _tqdm_progress(total: int) -> tuple[ScanProgress, Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, file=sys.stderr, unit="file", desc="scanning", leave=False)

    def update(done: int, _total: int, _path: str) -> None:
        bar.n = done
        bar.refresh()

    return update, bar.close


class Catalog:
    """The catalogue of one MEDLEY_HOME. Safe to share between threads (one connection, one lock)."""

    def __init__(self, home: Path | None = None, register_starters: bool = True) -> None:
        self.home = Path(home) if home is not None else medley_home()
        self.adapters_dir = self.home / "adapters"
        self.path = self.home / "catalog.sqlite"
        self._lock = threading.RLock()
        self._db = connect(self.path)
        self.sweep()
        if register_starters:
            self.register_starters()

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def sweep(self) -> list[Path]:
        """Remove what killed writers left in the adapters folder: their temp files, and copies they
        published but never catalogued. Files of live writers are left alone. Returns what went."""
        catalogued: set[Path] | None = None

        def claimed(path: Path) -> bool:
            nonlocal catalogued
            if catalogued is None:
                with self._lock:
                    rows = self._db.execute("SELECT path FROM adapters").fetchall()
                catalogued = {Path(row["path"]).resolve() for row in rows}
            return any(candidate.resolve() in catalogued for candidate in main_file_of(path))

        return sweep_temporaries(self.adapters_dir, keep=claimed)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _log(self, db: sqlite3.Connection, action: str, adapter_id: int, name: str) -> None:
        db.execute("INSERT INTO changes (action, adapter_id, name, at) VALUES (?, ?, ?, ?)",
                   (action, adapter_id, name, _now()))

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def _set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   (key, value))

    def _free_name(self, db: sqlite3.Connection, wanted: str, own_id: int | None = None) -> str:
        name, number = wanted, 2
        while True:
            row = db.execute("SELECT id FROM adapters WHERE name = ?", (name,)).fetchone()
            if row is None or row["id"] == own_id:
                return name
            name = f"{wanted}-{number}"
            number += 1

    def _insert(self, db: sqlite3.Connection, record: AdapterRecord, mtime_ns: int) -> AdapterRecord:
        record = replace(record, name=self._free_name(db, record.name))
        values = row_values(record)
        columns = ", ".join([*values, "mtime_ns"])
        marks = ", ".join("?" for _ in range(len(values) + 1))
        cursor = db.execute(f"INSERT INTO adapters ({columns}) VALUES ({marks})", [*values.values(), mtime_ns])
        record = replace(record, id=int(cursor.lastrowid or 0))
        self._log(db, "added", record.id, record.name)
        return record

    def _path_taken(self, db: sqlite3.Connection, path: Path) -> bool:
        return db.execute("SELECT 1 FROM adapters WHERE path = ? LIMIT 1", (str(path),)).fetchone() is not None

    def _find_sha(self, db: sqlite3.Connection, sha256: str) -> AdapterRecord | None:
        row = db.execute("SELECT * FROM adapters WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        return None if row is None else record_from_row(row)

    # ------------------------------------------------------------------ reading

    @property
    def revision(self) -> int:
        """Grows with every change; compare with a stored value, then ask :meth:`changed_since`."""
        with self._lock:
            row = self._db.execute("SELECT MAX(revision) AS revision FROM changes").fetchone()
        return int(row["revision"] or 0)

    def changed_since(self, revision: int) -> list[CatalogChange]:
        with self._lock:
            rows = self._db.execute("SELECT revision, action, adapter_id, name FROM changes WHERE revision > ? "
                                    "ORDER BY revision", (revision,)).fetchall()
        return [CatalogChange(int(r["revision"]), r["action"], int(r["adapter_id"]), r["name"]) for r in rows]

    def find(self, name_or_id: str | int) -> AdapterRecord | None:
        """The record with this id (an int or a string of digits) or name (case-insensitive), or None."""
        with self._lock:
            row = None
            if isinstance(name_or_id, int) or str(name_or_id).isdigit():
                row = self._db.execute("SELECT * FROM adapters WHERE id = ?", (int(name_or_id),)).fetchone()
            if row is None:
                row = self._db.execute("SELECT * FROM adapters WHERE name = ?", (str(name_or_id),)).fetchone()
        return None if row is None else record_from_row(row)

    def get(self, name_or_id: str | int) -> AdapterRecord:
        record = self.find(name_or_id)
        if record is None:
            raise AdapterNotFoundError(f"no adapter named {name_or_id!r} in the library")
        return record

    def list(self, base: str | None = None, kind: str | None = None) -> list[AdapterRecord]:
        """Records sorted by name, optionally only those of one base and/or kind."""
        if base is not None and base not in BASES:
            raise LibraryError(f"unknown base {base!r} (one of {', '.join(BASES)})")
        if kind is not None and kind not in KINDS:
            raise LibraryError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        clauses, values = [], []
        for column, value in (("base", base), ("kind", kind)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM adapters{where} ORDER BY name COLLATE NOCASE", values).fetchall()
        return [record_from_row(row) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM adapters").fetchone()[0])

    def load_adapter(self, name_or_id: str | int) -> LoraAdapter:
        """The canonical form of a catalogued adapter (read from its file now)."""
        record = self.get(name_or_id)
        path = Path(record.path)
        if not path.is_file():
            raise LibraryError(f"{record.name}: its file {path} is missing; rescan or remove it")
        return read_adapter(path)

    # ------------------------------------------------------------------ adding

    def register(self, path: Path, source: str = "trained", facts: AdapterFacts | None = None) -> AdapterRecord:
        """Catalogue a file where it lies (trained adapters, starters). Raises on a bad file or a duplicate."""
        path = Path(path).absolute()
        facts = facts or inspect_adapter_file(path)
        with self._transaction() as db:
            existing = self._find_sha(db, facts.sha256)
            if existing is not None:
                raise DuplicateAdapterError(f"{path.name}: already in the library as {existing.name!r}")
            return self._insert(db, _record_from_facts(facts, source, path), facts.mtime_ns)

    def import_file(self, path: Path, kind: str | None = None, name: str | None = None) -> AdapterRecord:
        """Copy ``path`` (and its sidecars) into MEDLEY_HOME/adapters and catalogue the copy.

        The file is checked completely before anything is copied; on any error the catalogue and
        the adapters folder are unchanged, and a process killed at any point leaves nothing that the
        next :class:`Catalog` does not sweep away (see :mod:`library.importing`).
        """
        source = Path(path).absolute()
        refuse_pickled_suffix(source)
        if source.suffix.lower() != ADAPTER_SUFFIX:
            raise AdapterFileError(f"{source.name}: only {ADAPTER_SUFFIX} files can be imported")
        if kind is not None and kind not in KINDS:
            raise LibraryError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        real = check_link(source, source.parent)
        facts = inspect_adapter_file(real)
        with self._lock:
            existing = self._find_sha(self._db, facts.sha256)
        if existing is not None:
            raise DuplicateAdapterError(f"{source.name}: already in the library as {existing.name!r}")
        name = alias(name) if name else None
        sidecars = dict(facts.sidecars.files)
        peft_config = config_path_beside(real)
        if peft_config is not None:
            sidecars[PEFT_CONFIG_SUFFIX] = peft_config
        published: dict[str, Path] = {}
        with staged(self.adapters_dir, {ADAPTER_SUFFIX: real, **sidecars}) as files:
            if sha256_of(files[0].temp) != facts.sha256:
                raise AdapterFileError(f"{source.name}: changed while it was being imported; try again")
            try:
                with self._transaction() as db:
                    if self._find_sha(db, facts.sha256) is not None:
                        raise DuplicateAdapterError(f"{source.name}: already in the library")
                    published = publish(self.adapters_dir, name or facts.info.name, files,
                                        taken=lambda path: self._path_taken(db, path))
                    destination = published[ADAPTER_SUFFIX]
                    previews = [str(published[suffix]) for suffix, sidecar in sidecars.items()
                                if str(sidecar) in facts.info.previews]
                    mtime_ns = destination.stat().st_mtime_ns
                    record = _record_from_facts(facts, "import", destination)
                    record = replace(record, previews=previews, name=name or record.name, kind=kind or record.kind,
                                     mtime=mtime_ns / 1e9)
                    record = self._insert(db, record, mtime_ns)
                    if kind is not None:
                        db.execute("UPDATE adapters SET user_fields = ? WHERE id = ?",
                                   (json.dumps(["kind"]), record.id))
            except BaseException:
                for leftover in published.values():
                    leftover.unlink(missing_ok=True)
                raise
        return record

    def register_starters(self, folder: Path | None = None) -> list[AdapterRecord]:
        """See :func:`ensure_starter_library`."""
        folder = Path(folder) if folder is not None else STARTER_DIR
        if not folder.is_dir():
            return []
        offered = set(json.loads(self._meta("starter_offered") or "[]"))
        added: list[AdapterRecord] = []
        newly_offered: list[str] = []
        for item in find_adapter_files(folder):
            if not isinstance(item, Candidate):
                continue
            relative = item.path.relative_to(folder.resolve()).as_posix()
            if relative in offered:
                continue
            newly_offered.append(relative)
            try:
                facts = inspect_adapter_file(item.path, item.listing)
                added.append(self.register(item.path, source="starter", facts=facts))
            except (AdapterFileError, DuplicateAdapterError):
                continue
        if newly_offered:
            with self._transaction() as db:
                self._set_meta(db, "starter_offered", json.dumps(sorted(offered | set(newly_offered))))
        return added

    # ------------------------------------------------------------------ scanning

    def scan(self, folder: Path, progress: bool | ScanProgress | None = None, source: str = "scan") -> ScanReport:
        """Catalogue every adapter under ``folder`` in place; bad files are reported, the rest carry on.

        Unchanged files (same size and mtime) are not read again; files that vanished from the
        folder leave the catalogue. ``progress``: True for a bar on stderr, or a callback.
        """
        root = Path(folder).absolute()
        if not root.is_dir():
            raise LibraryError(f"{folder}: not a folder")
        started = time.perf_counter()
        report = ScanReport(folder=str(root))
        found = list(find_adapter_files(root))
        candidates = [item for item in found if isinstance(item, Candidate)]
        report.problems.extend(item for item in found if isinstance(item, FileProblem))
        callback, finish = (None, None)
        if progress is True:
            callback, finish = _tqdm_progress(len(candidates))
        elif callable(progress):
            callback = progress
        with self._lock:
            rows = self._db.execute("SELECT id, name, path, size, mtime_ns, user_fields FROM adapters").fetchall()
        known = {row["path"]: row for row in rows if Path(row["path"]).is_relative_to(root)}
        seen: set[str] = set()
        pending: list[tuple[str, AdapterFacts]] = []  # read, waiting for the next batch
        try:
            for done, candidate in enumerate(candidates, start=1):
                path = candidate.path
                seen.add(str(path))
                try:
                    stat = path.stat()
                    row = known.get(str(path))
                    if row is not None and row["size"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns:
                        report.unchanged += 1
                    else:
                        facts = inspect_adapter_file(check_link(path, root), candidate.listing)
                        facts.path = path
                        pending.append((str(path), facts))
                except (AdapterFileError, OSError) as error:
                    report.problems.append(FileProblem(str(path), str(error)))
                if len(pending) >= _BATCH:
                    self._apply_scan(pending, report, source)
                    pending = []
                if callback is not None:
                    callback(done, len(candidates), str(path))
            self._apply_scan(pending, report, source)
            gone = [row for path, row in known.items() if path not in seen and not Path(path).exists()]
            if gone:
                with self._transaction() as db:
                    for row in gone:
                        if db.execute("DELETE FROM adapters WHERE id = ? AND path = ?",
                                      (row["id"], row["path"])).rowcount:
                            self._log(db, "removed", row["id"], row["name"])
                            report.removed.append(row["name"])
        finally:
            if finish is not None:
                finish()
        report.seconds = time.perf_counter() - started
        return report

    def _apply_scan(self, pending: Sequence[tuple[str, AdapterFacts]], report: ScanReport, source: str) -> None:
        """Write one batch of scanned files. Rows are read again inside the transaction, so what another
        process wrote since the scan started (an edit, the same file catalogued) is kept, not overwritten."""
        if not pending:
            return
        with self._transaction() as db:
            for path, facts in pending:
                fresh = _record_from_facts(facts, source, Path(path))
                row = db.execute("SELECT * FROM adapters WHERE path = ?", (path,)).fetchone()
                if row is not None:
                    if (row["sha256"], row["size"], row["mtime_ns"]) == (facts.sha256, facts.size, facts.mtime_ns):
                        report.unchanged += 1
                        continue
                    self._update_from_file(db, row, fresh, facts.mtime_ns)
                    report.updated.append(row["name"])
                    continue
                existing = self._find_sha(db, facts.sha256)
                if existing is not None:
                    report.duplicates.append((path, existing.name))
                    continue
                report.added.append(self._insert(db, fresh, facts.mtime_ns).name)

    def _update_from_file(self, db: sqlite3.Connection, row: sqlite3.Row, fresh: AdapterRecord, mtime_ns: int) -> None:
        """Refresh what the file says, keeping id, name, added_at, source and the fields the user edited."""
        kept = set(json.loads(row["user_fields"])) | {"id", "name", "added_at", "source"}
        values = {k: v for k, v in row_values(fresh).items() if k not in kept}
        assignments = ", ".join(f"{column} = ?" for column in values)
        db.execute(f"UPDATE adapters SET {assignments}, mtime_ns = ? WHERE id = ?",
                   [*values.values(), mtime_ns, row["id"]])
        self._log(db, "updated", row["id"], row["name"])

    # ------------------------------------------------------------------ editing and removing

    def edit(self, name_or_id: str | int, **changes: object) -> AdapterRecord:
        """Set user fields: triggers (list of str), preferred_weight, kind, notes, description, title.
        Edited fields keep their value when the file is rescanned."""
        unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
        if unknown:
            raise LibraryError(f"cannot edit {', '.join(unknown)} (editable: {', '.join(EDITABLE_FIELDS)})")
        values = {key: _edited_value(key, value) for key, value in changes.items() if value is not None}
        record = self.get(name_or_id)
        if not values:
            return record
        with self._transaction() as db:
            row = db.execute("SELECT user_fields FROM adapters WHERE id = ?", (record.id,)).fetchone()
            if row is None:
                raise AdapterNotFoundError(f"no adapter named {name_or_id!r} in the library")
            user_fields = sorted(set(json.loads(row["user_fields"])) | set(values))
            assignments = ", ".join(f"{column} = ?" for column in values)
            db.execute(f"UPDATE adapters SET {assignments}, user_fields = ? WHERE id = ?",
                       [*values.values(), json.dumps(user_fields), record.id])
            self._log(db, "edited", record.id, record.name)
        return self.get(record.id)

    def remove(self, name_or_id: str | int) -> AdapterRecord:
        """Forget an adapter; its file (and copied sidecars) are deleted only when they live in
        MEDLEY_HOME/adapters (an imported copy)."""
        record = self.get(name_or_id)
        with self._transaction() as db:
            if not db.execute("DELETE FROM adapters WHERE id = ?", (record.id,)).rowcount:
                raise AdapterNotFoundError(f"no adapter named {name_or_id!r} in the library")
            self._log(db, "removed", record.id, record.name)
        path = Path(record.path)
        if is_within(path, self.adapters_dir):
            stem = path.name.removesuffix(ADAPTER_SUFFIX)
            for suffix in (ADAPTER_SUFFIX, *SIDECAR_SUFFIXES):
                copied = path.with_name(stem + suffix)
                if is_within(copied, self.adapters_dir):
                    copied.unlink(missing_ok=True)
        return record


def ensure_starter_library(catalog: Catalog | None = None, folder: Path | None = None) -> list[AdapterRecord]:
    """Register the starter library (assets/starter-library) in ``catalog`` (default: MEDLEY_HOME's).

    Every ``.safetensors`` there is offered once, in place, with source "starter"; one the user
    removed is not added back. A missing folder (the starter library not built yet) is fine.
    """
    if catalog is None:
        with Catalog(register_starters=False) as own:
            return own.register_starters(folder)
    return catalog.register_starters(folder)


def open_catalog(home: Path | None = None) -> Catalog:
    """The catalogue of MEDLEY_HOME (registering the starter library on first use)."""
    return Catalog(home)


__all__ = ["Catalog", "CatalogChange", "ScanReport", "ensure_starter_library", "open_catalog"]
