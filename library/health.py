"""Is the catalogue file sound? SQLite's own integrity check and an adapter count, for ``medley doctor``.

It only looks: the file is opened read-write but never created (``mode=rw``), no schema is written,
no starter adapters are registered and nothing is swept, so a missing catalogue stays missing and a
broken one is left as it was for the user to inspect. (Read-only mode would leave the WAL's ``-wal``
and ``-shm`` files behind; a read-write connection removes them as it closes, as the catalogue does.)
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from library.catalog_db import SCHEMA_VERSION, record_from_row
from library.records import AdapterRecord

CATALOG_FILE = "catalog.sqlite"  # beside library.catalog.Catalog's own path
OK, MISSING, UNHEALTHY = "ok", "missing", "unhealthy"


@dataclass(frozen=True)
class CatalogueHealth:
    path: str
    status: str  # OK, MISSING (not created yet: the first library command creates it) or UNHEALTHY
    message: str
    adapters: int | None = None
    integrity: str | None = None  # "ok", or what PRAGMA integrity_check reported
    # the rows as records (None: not readable by this Medley, e.g. before a migration the next write makes)
    records: tuple[AdapterRecord, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def healthy(self) -> bool:
        return self.status != UNHEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "healthy": self.healthy, "adapters": self.adapters,
                "integrity": self.integrity, "message": self.message}


def check_catalogue(home: Path) -> CatalogueHealth:
    """The health of ``home/catalog.sqlite``, with its records when they can be read."""
    path = Path(home) / CATALOG_FILE
    if not path.exists():
        return CatalogueHealth(str(path), MISSING, "not created yet; the first library command creates it")
    if not path.is_file():
        return CatalogueHealth(str(path), UNHEALTHY, "is not a file")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=5.0)
    except sqlite3.Error as error:
        return CatalogueHealth(str(path), UNHEALTHY, f"cannot be opened: {error}")
    try:
        return _inspect(connection, path)
    except sqlite3.Error as error:  # "file is not a database", "database disk image is malformed", ...
        return CatalogueHealth(str(path), UNHEALTHY, f"{error}; move it aside and run `medley library list` "
                                                     "to start a new catalogue (adapter files are not affected)")
    finally:
        connection.close()


def _inspect(connection: sqlite3.Connection, path: Path) -> CatalogueHealth:
    problems = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
    integrity = "ok" if problems == ["ok"] else "; ".join(problems[:5])
    if integrity != "ok":
        return CatalogueHealth(str(path), UNHEALTHY, f"SQLite integrity check failed: {integrity}",
                               integrity=integrity)
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        return CatalogueHealth(str(path), UNHEALTHY, f"written by a newer Medley (schema {version}); upgrade Medley",
                               integrity=integrity)
    tables = {str(row[0]) for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "adapters" not in tables:
        return CatalogueHealth(str(path), UNHEALTHY, "has no adapters table: not a Medley catalogue",
                               integrity=integrity)
    count = int(connection.execute("SELECT COUNT(*) FROM adapters").fetchone()[0])
    connection.row_factory = sqlite3.Row
    records: tuple[AdapterRecord, ...] | None
    try:
        records = tuple(record_from_row(row) for row in connection.execute("SELECT * FROM adapters ORDER BY id"))
    except (IndexError, KeyError, TypeError, ValueError):  # an older schema: the next library command migrates it
        records = None
    return CatalogueHealth(str(path), OK, f"{count} adapters, integrity ok", adapters=count, integrity=integrity,
                           records=records)
