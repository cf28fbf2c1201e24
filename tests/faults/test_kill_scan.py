"""``kill -9`` of a real ``medley library scan`` of 2,000 files, half-way: the catalogue holds whole
batches only, passes ``PRAGMA integrity_check``, and the next scan adds exactly the rest."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from faults.processes import integrity, kill, leftovers, medley, progress_on_terminal, start, terminal
from faults.synthetic import write_loras
from library import catalog as catalog_module
from library.catalog import Catalog

FILES = 2000


def _rows_under(home: Path, folder: Path) -> int:
    connection = sqlite3.connect(f"file:{home / 'catalog.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM adapters WHERE path LIKE ?",
                                      (f"{folder}/%",)).fetchone()[0])
    finally:
        connection.close()


def test_kill_during_a_2000_file_scan(tmp_path):
    folder = tmp_path.resolve() / "loras"
    paths = write_loras(folder, FILES)
    home = tmp_path / "home"
    batch = catalog_module._BATCH
    master, slave = terminal()
    process = start(medley("library", "scan", str(folder)), home, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    try:
        shown = progress_on_terminal(process, master, FILES, at_least=batch + 100)
        kill(process)
    finally:
        os.close(master)

    assert integrity(home / "catalog.sqlite") == "ok"
    committed = _rows_under(home, folder)
    # every batch is one transaction: the rows are whole batches, at least the one before the bar's count
    assert batch <= committed < FILES and committed % batch == 0, (shown, committed)
    with Catalog(home) as catalog:
        assert not leftovers(catalog.adapters_dir)
        before = {record.name for record in catalog.list() if record.path.startswith(str(folder))}
        report = catalog.scan(folder)
        names = {record.name for record in catalog.list() if record.path.startswith(str(folder))}
    assert report.unchanged == committed and len(report.added) == FILES - committed
    assert not report.problems and not report.duplicates and not report.updated and not report.removed
    assert before <= names and names == {path.stem for path in paths}
    assert integrity(home / "catalog.sqlite") == "ok"
