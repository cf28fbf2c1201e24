"""Preview tags kept on disk: a new process describes the library without running CLIP again."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from library.records import AdapterRecord
from retrieval.preview_tags import TAG_STORE_FILE, PreviewTagger, TagStore

LABELS = ["circle", "square", "stripes"]


class CountingEmbedder:
    """Images and texts in one 3-d space: every image is 'circle'; counts its calls."""

    def __init__(self, name: str = "fake-clip:1") -> None:
        self.name = name
        self.image_calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[[LABELS.index(t.rsplit(" ", 1)[-1]) for t in texts]]

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        self.image_calls += 1
        return np.tile(np.array([[1.0, 0.2, 0.1]], dtype=np.float32), (len(images), 1))


def _record(tmp_path: Path) -> AdapterRecord:
    preview = tmp_path / "ring.png"
    if not preview.exists():
        Image.new("RGB", (8, 8), (200, 30, 30)).save(preview)
    return AdapterRecord(id=1, sha256="ab" * 32, name="ring", title="Ring", path=str(tmp_path / "ring.safetensors"),
                         format="kohya", base="toy", rank=4, kind="content", previews=[str(preview)])


def _tagger(store: TagStore, embedder: CountingEmbedder) -> PreviewTagger:
    return PreviewTagger(embedder, LABELS, top_k=1, store=store)


def test_tags_are_read_back_from_disk_by_a_new_tagger(tmp_path: Path) -> None:
    record = _record(tmp_path)
    first = CountingEmbedder()
    assert _tagger(TagStore(tmp_path / "index"), first)(record) == ["circle"] and first.image_calls == 1
    assert (tmp_path / "index" / TAG_STORE_FILE).is_file()
    second = CountingEmbedder()
    assert _tagger(TagStore(tmp_path / "index"), second)(record) == ["circle"]
    assert second.image_calls == 0  # nothing recomputed


def test_a_changed_preview_or_model_recomputes(tmp_path: Path) -> None:
    record = _record(tmp_path)
    _tagger(TagStore(tmp_path), CountingEmbedder())(record)
    retrained = CountingEmbedder(name="fake-clip:2")
    _tagger(TagStore(tmp_path), retrained)(record)
    assert retrained.image_calls == 1
    stat = Path(record.previews[0]).stat()
    os.utime(record.previews[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = CountingEmbedder()
    _tagger(TagStore(tmp_path), again)(record)
    assert again.image_calls == 1


def test_an_unreadable_store_only_costs_a_recomputation(tmp_path: Path) -> None:
    record = _record(tmp_path)
    (tmp_path / TAG_STORE_FILE).write_text("{not json")
    embedder = CountingEmbedder()
    assert _tagger(TagStore(tmp_path), embedder)(record) == ["circle"] and embedder.image_calls == 1
    later = CountingEmbedder()
    assert _tagger(TagStore(tmp_path), later)(record) == ["circle"] and later.image_calls == 0


def test_two_stores_on_one_file_keep_each_others_entries(tmp_path: Path) -> None:
    one, two = TagStore(tmp_path), TagStore(tmp_path)
    assert one.get("k0") is None and two.get("k0") is None  # both read the (absent) file first
    one.put("a", ["circle"])
    two.put("b", ["square"])
    fresh = TagStore(tmp_path)
    assert fresh.get("a") == ["circle"] and fresh.get("b") == ["square"]


def test_failing_embedder_stores_nothing(tmp_path: Path) -> None:
    class Failing(CountingEmbedder):
        def embed_images(self, images: Sequence[Any]) -> np.ndarray:
            raise RuntimeError("no open_clip")

    tagger = _tagger(TagStore(tmp_path), Failing())
    assert tagger(_record(tmp_path)) == [] and not tagger.enabled
    assert not (tmp_path / TAG_STORE_FILE).exists()
