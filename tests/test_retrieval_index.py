"""The FAISS adapter index: edits, search, save/load, atomic save, HNSW mode, sync by keys."""

from __future__ import annotations

import numpy as np
import pytest

import retrieval.index as index_module
from retrieval.index import AdapterIndex, entry_key, read_header


def unit_vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def filled(kind: str = "auto", threshold: int = 50_000, n: int = 10) -> tuple[AdapterIndex, np.ndarray]:
    index = AdapterIndex("emb-a", 16, kind=kind, hnsw_threshold=threshold)
    vectors = unit_vectors(n)
    index.add(list(range(100, 100 + n)), vectors, [f"key{i}" for i in range(n)])
    return index, vectors


@pytest.mark.parametrize(
    "kind,threshold,expected", [("auto", 50_000, "flat"), ("auto", 5, "hnsw"), ("hnsw", 0, "hnsw")]
)
def test_add_search_remove_update(kind: str, threshold: int, expected: str) -> None:
    index, vectors = filled(kind, threshold)
    assert index.kind == expected and len(index) == 10
    scores, ids = index.search(vectors[3], 3)
    assert ids[0, 0] == 103 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert index.remove([103, 104, 999]) == 2
    assert 103 not in index and len(index) == 8
    assert 103 not in index.search(vectors[3], 8)[1][0]
    index.update([105], vectors[3:4], ["changed"])
    assert index.search(vectors[3], 1)[1][0, 0] == 105 and index.keys[105] == "changed"
    np.testing.assert_allclose(index.vectors([105])[0], vectors[3], atol=1e-6)
    with pytest.raises(KeyError):
        index.add([105], vectors[:1], ["dup"])


def test_search_pads_when_k_exceeds_size() -> None:
    index, vectors = filled(n=3)
    scores, ids = index.search(vectors[:2], 5)
    assert ids.shape == (2, 5) and (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    empty = AdapterIndex("emb-a", 16)
    assert (empty.search(vectors[0], 2)[1] == -1).all()


def test_auto_switches_to_hnsw_at_threshold_and_back() -> None:
    index = AdapterIndex("emb-a", 16, hnsw_threshold=6)
    vectors = unit_vectors(8)
    index.add(range(5), vectors[:5], ["k"] * 5)
    assert index.kind == "flat"
    index.add(range(5, 8), vectors[5:], ["k"] * 3)
    assert index.kind == "hnsw"
    assert index.search(vectors[6], 1)[1][0, 0] == 6
    index.remove([0, 1, 2])
    assert index.kind == "flat" and sorted(index.ids()) == [3, 4, 5, 6, 7]
    assert index.search(vectors[6], 1)[1][0, 0] == 6


@pytest.mark.parametrize("kind,threshold", [("auto", 50_000), ("auto", 5)])
def test_save_load_round_trip(tmp_path, kind: str, threshold: int) -> None:
    index, vectors = filled(kind, threshold)
    header_path = index.save(tmp_path)
    header = read_header(tmp_path)
    assert header is not None and header_path.name == "adapters.json"
    assert header["embedder"] == "emb-a" and header["dimension"] == 16 and header["count"] == 10
    assert header["fingerprint"] == index.fingerprint() and header["kind"] == index.kind
    loaded = AdapterIndex.load(tmp_path)
    assert loaded is not None
    assert loaded.keys == index.keys and loaded.kind == index.kind and loaded.fingerprint() == index.fingerprint()
    np.testing.assert_array_equal(loaded.search(vectors, 3)[1], index.search(vectors, 3)[1])
    loaded.remove([100])
    loaded.save(tmp_path)
    assert len(list(tmp_path.glob("adapters-*.faiss"))) == 1  # the previous generation is removed
    assert len(AdapterIndex.load(tmp_path)) == 9  # type: ignore[arg-type]


def test_save_is_atomic(tmp_path, monkeypatch) -> None:
    index, vectors = filled()
    index.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    index.remove([100, 101])

    real_write = index_module.write_atomic
    calls = {"n": 0}

    def failing_write(path, data):  # the FAISS file is written, the header write dies half-way
        calls["n"] += 1
        if str(path).endswith(".json"):
            partial = path.with_name(f".{path.name}.crash.tmp")
            partial.write_bytes(data[: len(data) // 2])
            partial.unlink()
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(index_module, "write_atomic", failing_write)
    with pytest.raises(OSError):
        index.save(tmp_path)
    assert calls["n"] == 2
    loaded = AdapterIndex.load(tmp_path)
    assert loaded is not None and len(loaded) == 10  # the old index, whole
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_rejects_missing_or_inconsistent(tmp_path) -> None:
    assert AdapterIndex.load(tmp_path) is None
    index, _ = filled()
    index.save(tmp_path)
    (tmp_path / "adapters.json").write_text('{"format": 1, "embedder": "emb-a"')  # torn JSON
    assert AdapterIndex.load(tmp_path) is None
    index.save(tmp_path)
    for path in tmp_path.glob("adapters-*.faiss"):
        path.unlink()
    assert AdapterIndex.load(tmp_path) is None


def test_diff_by_keys() -> None:
    index, _ = filled(n=4)  # ids 100..103 with keys key0..key3
    diff = index.diff({100: "key0", 101: "other", 104: "new"})
    assert diff.added == [104] and diff.removed == [102, 103] and diff.changed == [101]
    assert index.diff(dict(index.keys)).empty
    assert entry_key("a" * 64, "d1") != entry_key("a" * 64, "d2")


def test_rejects_wrong_dimension() -> None:
    index = AdapterIndex("emb-a", 16)
    with pytest.raises(ValueError):
        index.add([1], np.zeros((1, 8), dtype=np.float32), ["k"])


def test_write_atomic_leaves_old_file_on_failure(tmp_path, monkeypatch) -> None:
    import os

    from library.files import write_atomic

    target = tmp_path / "file.bin"
    write_atomic(target, b"old")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
