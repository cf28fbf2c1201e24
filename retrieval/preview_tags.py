"""Zero-shot tags for an adapter's previews with a CLIP-style embedder (the refiner adds them).

:func:`zero_shot_tags` is the math; :class:`PreviewTagger` applies it to a catalogue record's
preview files (cached by file, in memory and, given a :class:`TagStore`, on disk);
:func:`preview_tagger` gives the tagger of an open_clip folder (the toy CLIP by default), or
``None`` where open_clip or the model is missing.

The disk cache is what keeps ``medley search`` from loading torch and open_clip on every run: the
retriever describes every adapter each time it opens, and a description holds its previews' tags.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from library.records import AdapterRecord

log = logging.getLogger(__name__)


class ImageTextEmbedder(Protocol):
    """Images and texts in one space (e.g. :class:`retrieval.embedders.image.ImageEmbedder`)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_images(self, images: Sequence[Any]) -> np.ndarray: ...


def zero_shot_tags(
    previews: Sequence[str | Path | Any],
    embedder: ImageTextEmbedder,
    labels: Sequence[str],
    *,
    top_k: int = 3,
    template: str = "a picture of {}",
    min_margin: float = 0.0,
) -> list[str]:
    """The ``top_k`` labels whose prompt is closest to the mean preview embedding.

    A label is kept only if it beats the mean label similarity by ``min_margin``. No previews
    or no labels gives ``[]``. Ties break by label order, so the result is deterministic.
    """
    if not previews or not labels:
        return []
    images = embedder.embed_images(list(previews))
    centre = images.mean(axis=0)
    centre /= max(float(np.linalg.norm(centre)), 1e-12)
    scores = embedder.embed([template.format(label) for label in labels]) @ centre
    floor = float(scores.mean()) + min_margin
    order = sorted(range(len(labels)), key=lambda i: (-float(scores[i]), i))
    return [labels[i] for i in order[:top_k] if float(scores[i]) >= floor]


# -- tagging catalogue records ------------------------------------------------------------------

PREVIEW_TAGS = 3
SHEET_GRID = 2  # Medley's preview sheets (starter library, training) are 2x2 cells


def toy_world_labels() -> list[str]:
    """What preview tags pick from: base shapes, textures and colours, and the novel concepts' names."""
    from toyworld.vocab import BASE_SHAPES, BASE_TEXTURES, FOREGROUND_COLOURS, NOVEL_CONCEPTS  # data only

    return [*BASE_SHAPES, *BASE_TEXTURES, *FOREGROUND_COLOURS, *(concept.name for concept in NOVEL_CONCEPTS)]


def _sheet_cells(image: Any, grid: int = SHEET_GRID) -> list[Any]:
    """The cells of a square ``grid`` x ``grid`` preview sheet (the whole image if it cannot be one)."""
    width, height = image.size
    if width != height or width % grid:
        return [image]
    cell = width // grid
    return [image.crop((x * cell, y * cell, (x + 1) * cell, (y + 1) * cell)) for y in range(grid) for x in range(grid)]


def _file_key(path: str) -> tuple[str, int, int]:
    try:
        stat = Path(path).stat()
    except OSError:
        return (path, -1, -1)
    return (path, stat.st_size, stat.st_mtime_ns)


TAG_STORE_FILE = "preview-tags.json"


class TagStore:
    """Preview tags on disk (``<folder>/preview-tags.json``), by a key of the model, labels and preview files.

    A lost or unreadable file only costs the tags' recomputation; a write merges with what another
    process wrote meanwhile and replaces the file atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / TAG_STORE_FILE
        self._lock = threading.Lock()
        self._entries: dict[str, list[str]] | None = None

    def _read(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): [str(t) for t in v] for k, v in data.items() if isinstance(v, list)}

    def get(self, key: str) -> list[str] | None:
        with self._lock:
            if self._entries is None:
                self._entries = self._read()
            tags = self._entries.get(key)
            return None if tags is None else list(tags)

    def put(self, key: str, tags: Sequence[str]) -> None:
        from library.files import write_atomic

        with self._lock:
            entries = self._read() | (self._entries or {})
            entries[key] = list(tags)
            self._entries = entries
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, json.dumps(entries, sort_keys=True, separators=(",", ":")).encode())
            except OSError as error:  # a read-only home: the tags stay cached in memory
                log.debug("preview tags not saved to %s: %s", self.path, error)


class PreviewTagger:
    """Zero-shot tags (:func:`retrieval.preview_tags.zero_shot_tags`) of a record's previews, cached by file.

    With ``toy_only`` (the toy CLIP, which knows nothing but the toy world) only ``toy``-base records
    are tagged, each preview read as a 2x2 sheet of cells. Unreadable previews are skipped; an embedder
    that fails (no open_clip, a broken model) turns the tagger off: no tags, never an error.
    """

    def __init__(self, embedder: ImageTextEmbedder, labels: Sequence[str] | None = None, *, toy_only: bool = False,
                 top_k: int = PREVIEW_TAGS, store: TagStore | None = None) -> None:
        self.embedder = embedder
        self.labels = list(labels) if labels is not None else toy_world_labels()
        self.toy_only = toy_only
        self.top_k = top_k
        self.store = store
        self.enabled = True
        self._cache: dict[tuple[tuple[str, int, int], ...], list[str]] = {}

    def _store_key(self, files: tuple[tuple[str, int, int], ...]) -> str | None:
        name = getattr(self.embedder, "name", None)  # the model and its weights; without one, no disk cache
        if not isinstance(name, str):
            return None
        text = json.dumps([name, self.labels, self.top_k, self.toy_only, files])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def __call__(self, record: AdapterRecord) -> list[str]:
        tags = self.cached_tags(record)
        if tags is not None:
            return tags
        key = tuple(_file_key(path) for path in record.previews)
        tags = self._tags(record.previews)
        if not self.enabled:
            return []
        stored_key = self._store_key(key) if self.store is not None else None
        if self.store is not None and stored_key is not None:
            self.store.put(stored_key, tags)
        self._cache[key] = tags
        return list(tags)

    def cached_tags(self, record: AdapterRecord) -> list[str] | None:
        """The record's tags when they are known without running the model (no previews to tag, or cached in
        memory or in the store); None when only the model can tell."""
        if not (self.enabled and record.previews) or (self.toy_only and record.base != "toy"):
            return []
        key = tuple(_file_key(path) for path in record.previews)
        if key not in self._cache:
            stored_key = self._store_key(key) if self.store is not None else None
            tags = self.store.get(stored_key) if self.store is not None and stored_key is not None else None
            if tags is None:
                return None
            self._cache[key] = tags
        return list(self._cache[key])

    def _images(self, paths: Sequence[str]) -> list[Any]:
        from PIL import Image

        images = []
        for path in paths:
            try:
                with Image.open(path) as opened:
                    image = opened.convert("RGB")
            except Exception as error:  # a missing, truncated or hostile preview only loses its tags
                log.debug("preview %s unreadable: %s", path, error)
                continue
            images.extend(_sheet_cells(image) if self.toy_only else [image])
        return images

    def _tags(self, paths: Sequence[str]) -> list[str]:
        images = self._images(paths)
        if not images:
            return []
        try:
            return zero_shot_tags(images, self.embedder, self.labels, top_k=self.top_k)
        except Exception as error:  # EmbedderUnavailableError, a broken model: tags are optional
            log.warning("preview tags turned off: %s", error)
            self.enabled = False
            return []


_TAGGERS: dict[str, PreviewTagger] = {}
_STORES: dict[str, TagStore] = {}


def open_clip_installed() -> bool:
    return importlib.util.find_spec("open_clip") is not None


def preview_tagger(clip_path: str | Path | None = None, cache_dir: str | Path | None = None) -> PreviewTagger | None:
    """A tagger over an open_clip folder (``None``: the toy CLIP); ``None`` where open_clip or the model is missing.

    With ``cache_dir`` the tags are kept on disk there too (:class:`TagStore`)."""
    from retrieval.embedders.image import ImageEmbedder
    from retrieval.embedders.text import EmbedderUnavailableError

    if not open_clip_installed():
        return None
    try:
        embedder = ImageEmbedder(clip_path)
    except EmbedderUnavailableError:
        return None
    store = None
    if cache_dir is not None:
        folder = str(Path(cache_dir).expanduser().resolve())
        store = _STORES.setdefault(folder, TagStore(folder))
    # the name changes with the weights
    key = f"{embedder.path.resolve()}|{embedder.name}|{clip_path is None}|{store.path if store else ''}"
    if key not in _TAGGERS:
        _TAGGERS[key] = PreviewTagger(embedder, toy_only=clip_path is None, store=store)
    return _TAGGERS[key]
