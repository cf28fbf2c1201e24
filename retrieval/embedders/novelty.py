"""Novelty correction for retrieval from weights: prefer adapters the weight encoder does not recognise.

A weight encoder places an adapter next to the descriptions it was trained on; an adapter of a
concept it never saw lands next to that concept's nearest known relative (a ring beside the
circle LoRAs), where the relatives outrank it for every query. Cross-domain similarity local
scaling (CSLS, Conneau et al. 2018, "Word translation without parallel data") corrects such
hubs: an adapter's score for a query is lowered by its *familiarity*, the mean cosine of its
vector to its ``k`` nearest known descriptions,

    score(q, a) = q . a - beta / 2 * (familiarity(a) - reference),

so among adapters equally close to the query, the one no known description explains wins.
``reference`` is a typical familiarity of the adapters the encoder was trained on, so a familiar
adapter keeps about its cosine (and the composer's thresholds keep their meaning) while an
unfamiliar one gains. Folded into the vectors (``[a, -beta/2 * (familiarity(a) - reference)]``
against ``[q, 1]``) it is a plain inner product, and the FAISS index serves it unchanged.
``known``, ``k``, ``beta`` and ``reference`` ship with the encoder; ``training/weight_encoder.py``
chooses ``k`` and ``beta`` on validation concepts that a second encoder never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from library.files import write_atomic

KNOWN_FILE = "known.safetensors"


@dataclass(frozen=True)
class Novelty:
    known: np.ndarray  # [n, d] unit vectors of the descriptions the encoder was trained on
    k: int = 2
    beta: float = 0.0
    reference: float = 0.0  # the familiarity that costs nothing (typical of the training adapters)

    def __post_init__(self) -> None:
        if self.known.ndim != 2 or len(self.known) == 0:
            raise ValueError("novelty needs a non-empty [n, d] matrix of known description vectors")
        if not 1 <= self.k <= len(self.known):
            raise ValueError(f"novelty k must lie in 1..{len(self.known)}, got {self.k}")
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"novelty beta must be a finite number >= 0, got {self.beta}")
        if not np.isfinite(self.reference):
            raise ValueError(f"novelty reference must be finite, got {self.reference}")

    def familiarity(self, vectors: np.ndarray) -> np.ndarray:
        """[N]: each vector's mean cosine to its ``k`` nearest known descriptions."""
        similarities = np.asarray(vectors, dtype=np.float32) @ self.known.T
        return np.sort(similarities, axis=1)[:, -self.k :].mean(axis=1)

    def index_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """[N, d + 1]: adapter vectors with their familiarity penalty as an extra component."""
        penalty = -0.5 * self.beta * (self.familiarity(vectors) - self.reference)
        return np.ascontiguousarray(np.concatenate([vectors, penalty[:, None]], axis=1), dtype=np.float32)

    @staticmethod
    def query_vectors(vectors: np.ndarray) -> np.ndarray:
        """[N, d + 1]: query vectors that take the penalty at full weight."""
        ones = np.ones((len(vectors), 1), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate([vectors, ones], axis=1), dtype=np.float32)

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save

        path = Path(folder) / KNOWN_FILE
        write_atomic(path, save({"known": np.ascontiguousarray(self.known, dtype=np.float32)},
                                metadata={"k": str(self.k), "beta": repr(float(self.beta)),
                                          "reference": repr(float(self.reference))}))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Novelty | None:
        """The folder's novelty correction, or None when it has none."""
        from safetensors import safe_open

        path = Path(folder) / KNOWN_FILE
        if not path.is_file():
            return None
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            known = handle.get_tensor("known")
        return cls(known=known, k=int(metadata.get("k", 2)), beta=float(metadata.get("beta", 0.0)),
                   reference=float(metadata.get("reference", 0.0)))
