"""The catalogue's SQLite schema and the conversion between rows and :class:`AdapterRecord`."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from pathlib import Path
from typing import Any

from library.records import AdapterRecord

SCHEMA_VERSION = 2  # 2: the family column
LIST_FIELDS = frozenset({"targets", "triggers", "tags", "previews"})
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AdapterRecord))
# columns beside the record's fields: exact mtime for change detection, and which fields the user set
EXTRA_COLUMNS: tuple[str, ...] = ("mtime_ns", "user_fields")

SCHEMA = """
CREATE TABLE IF NOT EXISTS adapters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    title TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL UNIQUE,
    format TEXT NOT NULL DEFAULT '',
    base TEXT NOT NULL DEFAULT 'unknown',
    rank INTEGER NOT NULL DEFAULT 0,
    targets TEXT NOT NULL DEFAULT '[]',
    triggers TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    preferred_weight REAL NOT NULL DEFAULT 0.8,
    kind TEXT NOT NULL DEFAULT 'other',
    previews TEXT NOT NULL DEFAULT '[]',
    added_at TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    mtime REAL NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    user_fields TEXT NOT NULL DEFAULT '[]',
    family TEXT NOT NULL DEFAULT 'lora'
);
CREATE INDEX IF NOT EXISTS adapters_sha256 ON adapters (sha256);
CREATE INDEX IF NOT EXISTS adapters_base_kind ON adapters (base, kind);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    adapter_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        connection.close()
        raise RuntimeError(f"{path} was written by a newer Medley (schema {version}); upgrade Medley")
    connection.executescript(SCHEMA)
    _migrate(connection)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Columns added since schema 1 (an older catalogue keeps its rows; a rescan fills them in)."""
    columns = {row["name"] for row in connection.execute("PRAGMA table_info(adapters)")}
    if "family" not in columns:
        try:
            connection.execute("ALTER TABLE adapters ADD COLUMN family TEXT NOT NULL DEFAULT 'lora'")
        except sqlite3.OperationalError:  # another process added it first
            if "family" not in {row["name"] for row in connection.execute("PRAGMA table_info(adapters)")}:
                raise


def record_from_row(row: sqlite3.Row) -> AdapterRecord:
    values: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = row[name]
        values[name] = json.loads(value) if name in LIST_FIELDS else value
    return AdapterRecord(**values)


def row_values(record: AdapterRecord) -> dict[str, Any]:
    """Column values of ``record`` (without ``id``)."""
    values: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        if name == "id":
            continue
        value = getattr(record, name)
        values[name] = json.dumps(list(value)) if name in LIST_FIELDS else value
    return values
