"""Where rendered images are written, named one way for every face."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from pipeline.provenance import Provenance, save_png


def output_paths(count: int, seeds: Sequence[int], folder: Path, out: Path | None = None) -> list[Path]:
    """``out`` for one image (``out-N.png`` for several), else ``folder/<time>-<seed>-<N>-<id>.png`` (the id keeps
    concurrent renders of the same second apart)."""
    if out is not None:
        if count == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    token = uuid.uuid4().hex[:6]
    return [folder / f"{stamp}-{seed}-{i}-{token}.png" for i, seed in enumerate(seeds)]


def save_outcome(images: Sequence[Image.Image], provenance: Sequence[Provenance], folder: Path,
                 out: Path | None = None) -> list[Path]:
    """Write each image as a PNG with its provenance (A1111 ``parameters`` + Medley JSON); the paths."""
    paths = output_paths(len(images), [record.seed for record in provenance], folder, out)
    for image, record, path in zip(images, provenance, paths, strict=True):
        save_png(image, record, path)
    return paths
