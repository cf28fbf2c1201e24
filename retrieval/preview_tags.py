"""Zero-shot tags for an adapter's previews with a CLIP-style embedder (a hook for the refiner)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


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
