"""What every embedder offers: a stable ``name``, a ``dimension`` and a batch ``embed``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Maps texts into a vector space; rows come back float32 and L2-normalised.

    ``name`` identifies the model and its weights: an index built with one name is
    rebuilt when it is opened with another.
    """

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as a C-contiguous float32 array (zero rows stay zero)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


def folder_fingerprint(folder: Path, patterns: Iterable[str] = ("*.json", "*.safetensors", "*.bin")) -> str:
    """A short content fingerprint of a model folder: small JSON files in full, weights by name and size."""
    digest = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        if path.suffix == ".json" and size < (1 << 20):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:8]
