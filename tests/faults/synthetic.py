"""Many small valid LoRA files, cheaply: one set of toy tensors, a different name in each header."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save

from library.synthetic import small_kohya_tensors


def write_loras(folder: Path, count: int, prefix: str = "syn", seed: int = 0) -> list[Path]:
    """``count`` kohya files ``<prefix>-NNNN.safetensors``; their headers differ, so do their hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = small_kohya_tensors(seed=seed)
    paths = []
    for number in range(count):
        path = folder / f"{prefix}-{number:04d}.safetensors"
        path.write_bytes(save(tensors, metadata={"ss_output_name": path.stem}))
        paths.append(path)
    return paths
