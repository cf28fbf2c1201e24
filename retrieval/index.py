"""The adapter index: FAISS inner product over L2-normalised vectors, keyed by adapter id.

Small and medium libraries use ``IndexIDMap2(IndexFlatIP)`` (exact, supports removal).
From ``hnsw_threshold`` entries on (``kind="auto"``) it switches to ``IndexIDMap2(IndexHNSWFlat)``
with inner product; HNSW cannot remove, so removing rebuilds it from the stored vectors.

Beside each id the index keeps the entry's *key* (a hash of the file's sha256 and of the
description that was embedded), so a catalogue that changed is synced by diffing keys.
On disk (``MEDLEY_HOME/index/``): ``<name>-<generation>.faiss`` and ``<name>.json``, a header
naming the embedder, dimension, count, kind, fingerprint, the keys and the FAISS file.
Both are written to a temporary file and renamed, header last, so a reader never sees a torn index;
a save killed half-way leaves the previous header and its file in place (an index that a sync brings
up to date), and the next save clears the temp and FAISS files it left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from library.files import sweep_temporaries, write_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: saves are not serialised between processes
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
LOCK_FILE = ".lock"
DEFAULT_HNSW_THRESHOLD = 50_000
KINDS = ("auto", "flat", "hnsw")
log = logging.getLogger(__name__)


def entry_key(sha256: str, description_hash: str) -> str:
    """What an index entry was built from; it changes when the file or its description changes."""
    return hashlib.sha256(f"{sha256}\0{description_hash}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class IndexDiff:
    """What to do to make the index hold exactly the wanted {id: key}."""

    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _as_ids(ids: Iterable[int]) -> np.ndarray:
    return np.ascontiguousarray(np.fromiter((int(i) for i in ids), dtype=np.int64))


def _as_vectors(vectors: np.ndarray, dimension: int) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dimension:
        raise ValueError(f"vectors must be [n, {dimension}], got {list(array.shape)}")
    return array


class AdapterIndex:
    """Vectors of adapters by id. Vectors must be L2-normalised (scores are cosine similarities)."""

    def __init__(
        self,
        embedder_name: str,
        dimension: int,
        *,
        kind: str = "auto",
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        hnsw_m: int = 32,
        ef_construction: int = 64,
        ef_search: int = 96,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.embedder_name = embedder_name
        self.dimension = int(dimension)
        self.requested_kind = kind
        self.hnsw_threshold = int(hnsw_threshold)
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.keys: dict[int, str] = {}
        self._kind = "hnsw" if kind == "hnsw" else "flat"
        self._index: Any = self._new_index(self._kind)

    # -- structure ---------------------------------------------------------------------------
    def _new_index(self, kind: str) -> Any:
        inner: Any
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dimension, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        else:
            inner = faiss.IndexFlatIP(self.dimension)
        return faiss.IndexIDMap2(inner)  # faiss's wrapper keeps a reference to ``inner``

    def _wanted_kind(self, count: int) -> str:
        if self.requested_kind != "auto":
            return self.requested_kind
        return "hnsw" if count >= self.hnsw_threshold else "flat"

    @property
    def kind(self) -> str:
        """``flat`` or ``hnsw``: the structure in use now."""
        return self._kind

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every entry, in internal order."""
        count = self._index.ntotal
        if count == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dimension), dtype=np.float32)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = faiss.downcast_index(self._index.index).reconstruct_n(0, count)
        return ids, np.ascontiguousarray(vectors, dtype=np.float32)

    def _rebuild(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        index = self._new_index(kind)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index, self._kind = index, kind

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self.keys

    def ids(self) -> list[int]:
        return sorted(self.keys)

    # -- edits -------------------------------------------------------------------------------
    def add(self, ids: Sequence[int], vectors: np.ndarray, keys: Sequence[str]) -> None:
        """Add new entries; an id already present raises ``KeyError`` (use :meth:`update`)."""
        id_array = _as_ids(ids)
        array = _as_vectors(vectors, self.dimension)
        if not (len(id_array) == len(array) == len(keys)):
            raise ValueError(f"{len(id_array)} ids, {len(array)} vectors, {len(keys)} keys")
        if len(set(id_array.tolist())) != len(id_array):
            raise ValueError("duplicate ids in one add")
        present = [int(i) for i in id_array if int(i) in self.keys]
        if present:
            raise KeyError(f"ids already in the index: {present[:10]}")
        if len(id_array) == 0:
            return
        wanted = self._wanted_kind(len(self) + len(id_array))
        if wanted != self._kind:
            old_ids, old_vectors = self._all()
            self._rebuild(wanted, np.concatenate([old_ids, id_array]), np.concatenate([old_vectors, array]))
        else:
            self._index.add_with_ids(array, id_array)
        self.keys.update(zip(id_array.tolist(), keys, strict=True))

    def remove(self, ids: Iterable[int]) -> int:
        """Remove entries (unknown ids are ignored); returns how many went. HNSW rebuilds."""
        gone = [int(i) for i in ids if int(i) in self.keys]
        if not gone:
            return 0
        if self._kind == "flat":
            self._index.remove_ids(_as_ids(gone))
        else:
            all_ids, vectors = self._all()
            keep = ~np.isin(all_ids, np.asarray(gone, dtype=np.int64))
            self._rebuild(self._wanted_kind(int(keep.sum())), all_ids[keep], vectors[keep])
        for adapter_id in gone:
            del self.keys[adapter_id]
        if self._kind == "flat" and self._wanted_kind(len(self)) == "hnsw":  # an explicit hnsw request
            self._rebuild("hnsw", *self._all())
        return len(gone)

    def update(self, ids: Sequence[int], vectors: np.ndarray, keys: Sequence[str]) -> None:
        """Insert or replace entries."""
        self.remove(ids)
        self.add(ids, vectors, keys)

    # -- reads -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n, k], ids [n, k]) best first; missing slots have id -1 and score -inf."""
        array = _as_vectors(queries, self.dimension)
        k = max(1, int(k))
        if len(self) == 0:
            return np.full((len(array), k), -np.inf, dtype=np.float32), np.full((len(array), k), -1, dtype=np.int64)
        if self._kind == "hnsw":
            hnsw: Any = faiss.downcast_index(self._index.index)
            hnsw.hnsw.efSearch = max(self.ef_search, k)
        scores, ids = self._index.search(array, min(k, len(self)))
        if scores.shape[1] < k:
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids`` ([n, d]); an unknown id raises ``KeyError``."""
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        for row, adapter_id in enumerate(ids):
            if int(adapter_id) not in self.keys:
                raise KeyError(adapter_id)
            out[row] = self._index.reconstruct(int(adapter_id))
        return out

    def diff(self, wanted: Mapping[int, str]) -> IndexDiff:
        """Compare with the wanted {id: key} of the catalogue now."""
        added = sorted(i for i in wanted if i not in self.keys)
        removed = sorted(i for i in self.keys if i not in wanted)
        changed = sorted(i for i in wanted if i in self.keys and self.keys[i] != wanted[i])
        return IndexDiff(added, removed, changed)

    @staticmethod
    def fingerprint_of(keys: Mapping[int, str]) -> str:
        digest = hashlib.sha256()
        for adapter_id in sorted(keys):
            digest.update(f"{adapter_id}:{keys[adapter_id]}\n".encode())
        return digest.hexdigest()[:16]

    def fingerprint(self) -> str:
        """A hash of every (id, key): equal fingerprints mean the same entries."""
        return self.fingerprint_of(self.keys)

    # -- disk --------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "embedder": self.embedder_name,
            "dimension": self.dimension,
            "count": len(self),
            "kind": self._kind,
            "fingerprint": self.fingerprint(),
        }

    def save(self, directory: str | Path, name: str = "adapters") -> Path:
        """Write the FAISS file then the JSON header, each atomically; returns the header path.

        Saves hold ``.lock`` in the folder, so two processes never interleave theirs; each one clears
        what a killed save left (temp files, a FAISS file whose header was never written)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        index_file = f"{name}-{uuid.uuid4().hex[:12]}.faiss"
        with _save_lock(directory):
            write_atomic(directory / index_file, faiss.serialize_index(self._index).tobytes())
            header = self.header() | {
                "file": index_file,
                "hnsw": {"threshold": self.hnsw_threshold, "m": self.hnsw_m, "ef_construction": self.ef_construction,
                         "ef_search": self.ef_search, "requested": self.requested_kind},
                "keys": {str(adapter_id): key for adapter_id, key in sorted(self.keys.items())},
            }
            header_path = directory / f"{name}.json"
            try:
                write_atomic(header_path, json.dumps(header, separators=(",", ":")).encode())
            except BaseException:
                (directory / index_file).unlink(missing_ok=True)
                raise
            _clear_strays(directory, name, index_file)
        return header_path

    @classmethod
    def load(cls, directory: str | Path, name: str = "adapters") -> AdapterIndex | None:
        """The saved index, or ``None`` when there is none or it is unreadable or inconsistent."""
        directory = Path(directory)
        for _attempt in range(3):
            header = read_header(directory, name)
            if header is None:
                return None
            try:
                index = cls._from_header(directory, header)
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
                if read_header(directory, name) != header:
                    continue  # another process saved meanwhile (and removed the file this header named)
                log.warning("ignoring the index in %s: %s", directory, error)
                return None
            if _strays(directory, name, str(header["file"])):
                with _save_lock(directory, wait=False) as held:  # unless a save is under way
                    if held and read_header(directory, name) == header:
                        _clear_strays(directory, name, str(header["file"]))
            return index
        return None

    @classmethod
    def _from_header(cls, directory: Path, header: dict[str, Any]) -> AdapterIndex:
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')}")
        options = header.get("hnsw", {})
        index = cls(
            str(header["embedder"]),
            int(header["dimension"]),
            kind=str(options.get("requested", "auto")),
            hnsw_threshold=int(options.get("threshold", DEFAULT_HNSW_THRESHOLD)),
            hnsw_m=int(options.get("m", 32)),
            ef_construction=int(options.get("ef_construction", 64)),
            ef_search=int(options.get("ef_search", 96)),
        )
        raw = np.fromfile(directory / str(header["file"]), dtype=np.uint8)
        loaded: Any = faiss.deserialize_index(raw)
        if not isinstance(loaded, faiss.IndexIDMap2):
            loaded = faiss.downcast_index(loaded)
        if not isinstance(loaded, faiss.IndexIDMap2):
            raise ValueError(f"expected an IndexIDMap2, found {type(loaded).__name__}")
        keys = {int(k): str(v) for k, v in header["keys"].items()}
        stored_ids = set(faiss.vector_to_array(loaded.id_map).tolist())
        if loaded.d != index.dimension or loaded.ntotal != len(keys) or stored_ids != set(keys):
            raise ValueError("the FAISS file does not match its header")
        index._index = loaded
        index._kind = str(header.get("kind", "flat"))
        index.keys = keys
        return index


@contextlib.contextmanager
def _save_lock(directory: Path, wait: bool = True) -> Iterator[bool]:
    """Hold ``directory/.lock`` (POSIX flock) for the duration of a save; yields whether it is held
    (always, unless ``wait`` is False and another process holds it)."""
    if fcntl is None:  # pragma: no cover - not POSIX
        yield True
        return
    with open(directory / LOCK_FILE, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _strays(directory: Path, name: str, current: str) -> list[Path]:
    """FAISS files no header names (the previous one, or one a killed save wrote), and dead temp files."""
    stray = [path for path in directory.glob(f"{name}-*.faiss") if path.name != current]
    return stray + [path for path in directory.glob(".*.tmp")]


def _clear_strays(directory: Path, name: str, current: str) -> None:
    """Remove :func:`_strays` (with the save lock held: no save of this process or another is under way)."""
    for path in _strays(directory, name, current):
        if path.suffix == ".faiss":
            path.unlink(missing_ok=True)
    sweep_temporaries(directory)


def read_header(directory: str | Path, name: str = "adapters") -> dict[str, Any] | None:
    """The JSON header of a saved index, or ``None``."""
    path = Path(directory) / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
