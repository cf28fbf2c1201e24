"""``kill -9`` of a process rebuilding the retrieval index, at each step of its save (FAISS file written,
renamed, header written, renamed): what is on disk is the old index or the new one, never a torn one,
and the next use serves exactly the catalogue, with no temp or stray FAISS file left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faults.processes import child, integrity, kill, start, wait_for_pause
from faults.synthetic import write_loras
from library.catalog import Catalog
from retrieval.embedders.hashing import HashingEmbedder
from retrieval.index import AdapterIndex, entry_key, read_header
from retrieval.refiner import describe, description_hash
from retrieval.search import Retriever

OLD, NEW = HashingEmbedder(128), HashingEmbedder(256)
KILL_POINTS = {  # name -> (pause spec, whether the new header is in place when the process dies)
    "faiss-written": ({"calls": ["fsync"], "match": ".faiss"}, False),
    "faiss-renamed": ({"calls": ["replace"], "match": ".faiss", "when": "after"}, False),
    "header-written": ({"calls": ["fsync"], "match": "adapters.json"}, False),
    "header-renamed": ({"calls": ["replace"], "match": "adapters.json", "when": "after"}, True),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A home whose catalogue holds 250 adapters and whose saved index (another embedder) knows 200 of them."""
    root = tmp_path_factory.mktemp("index-kill")
    home = root / "home"
    with Catalog(home, register_starters=False) as catalog:
        catalog.scan(write_loras(root / "first", 200)[0].parent)
        Retriever(catalog.list(), embedder=OLD, home=home, describer=describe)
        catalog.scan(write_loras(root / "second", 50, prefix="more")[0].parent)
    return home


def _wanted(catalog: Catalog) -> dict[int, str]:
    return {r.id: entry_key(r.sha256, description_hash(describe(r))) for r in catalog.list()}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_kill_during_an_index_rebuild(prepared, tmp_path, point):
    home = tmp_path / "home"
    shutil.copytree(prepared, home)
    index_dir = home / "index"
    old_header = read_header(index_dir)
    assert old_header is not None and old_header["count"] == 200
    pause, header_written = KILL_POINTS[point]
    process = start(child("index", str(NEW.dimension)), home, pause=pause)
    wait_for_pause(process)
    kill(process)

    assert integrity(home / "catalog.sqlite") == "ok"
    with Catalog(home, register_starters=False) as catalog:
        wanted = _wanted(catalog)
        on_disk = AdapterIndex.load(index_dir)  # whole, whichever of the two it is
        assert on_disk is not None
        if header_written:
            assert on_disk.embedder_name == NEW.name and on_disk.keys == wanted
        else:
            assert on_disk.embedder_name == OLD.name and len(on_disk) == 200
        retriever = Retriever(catalog.list(), embedder=NEW, home=home, describer=describe)  # the next use
    assert retriever.last_sync.rebuilt is not header_written
    assert retriever.index.keys == wanted and len(retriever.index) == 250
    header = read_header(index_dir)
    assert header is not None and header["embedder"] == NEW.name
    files = sorted(p.name for p in index_dir.iterdir() if p.name != ".lock")  # (the lock saves take)
    assert files == sorted(["adapters.json", header["file"]])
    again = AdapterIndex.load(index_dir)
    assert again is not None and again.keys == wanted
