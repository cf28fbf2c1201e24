"""A dependency-free lexical embedder: hashed bag of words (and character trigrams).

Not semantic: it finds shared words only. Useful for tests, for benchmarks of the index
and composer without a model, and as a last-resort fallback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from retrieval.embedders.base import l2_normalise
from retrieval.scoring import normalise


class HashingEmbedder:
    def __init__(self, dimension: int = 256, trigrams: bool = True) -> None:
        self._dimension = dimension
        self.trigrams = trigrams

    @property
    def name(self) -> str:
        return f"hashing:{self._dimension}:{int(self.trigrams)}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _features(self, text: str) -> list[str]:
        words = normalise(text).split()
        features = [f"w:{word}" for word in words]
        if self.trigrams:
            for word in words:
                padded = f"#{word}#"
                features.extend(f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2))
        return features

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                weight = 1.0 if feature.startswith("w:") else 0.25
                out[row, value % self._dimension] += weight if (value >> 32) & 1 else -weight
        return l2_normalise(out)
