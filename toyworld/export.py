"""Write training images of a novel concept to a folder: PNGs plus ``captions.txt``.

So anyone can try ``medley train`` without photos of their own:

    export_concept("hartok", count=8, out=Path("hartok-images"))

Each caption names the concept by its trigger word (``a red hartok on a blue background``);
``captions.txt`` holds one ``file name<TAB>caption`` line per image. The seeds are disjoint
from those the starter library trains and is scored on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from toyworld.concepts import concept_prompts, concept_scenes
from toyworld.dataset import SEEDS_LORA, render_scenes
from toyworld.vocab import NOVEL_CONCEPTS, NovelConcept, novel_concept

SEEDS_EXPORT = SEEDS_LORA + 9_000_000
CAPTIONS_FILE = "captions.txt"
MAX_COUNT = 10_000


@dataclass
class Export:
    concept: NovelConcept
    files: list[Path]
    captions: list[str]
    captions_file: Path


def export_seeds(concept: NovelConcept, count: int, offset: int = 0) -> list[int]:
    start = SEEDS_EXPORT + NOVEL_CONCEPTS.index(concept) * 100_000 + offset
    return list(range(start, start + count))


def export_concept(name_or_trigger: str, count: int, out: Path, size: int = 32, offset: int = 0,
                   force: bool = False) -> Export:
    """Render ``count`` images of a novel concept into ``out`` (created if needed).

    ``size`` upscales the 32-pixel renders (nearest neighbour) for bases that want bigger images.
    Existing files are never overwritten unless ``force``. Raises ValueError/KeyError with a
    one-line message for an unknown concept, a bad count or size, or files in the way.
    """
    concept = novel_concept(name_or_trigger)
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}, got {count}")
    if not 8 <= size <= 4096:
        raise ValueError(f"size must be between 8 and 4096 pixels, got {size}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    names = [f"{concept.name}-{i:04d}.png" for i in range(count)]
    if not force:
        taken = [n for n in [*names, CAPTIONS_FILE] if (out / n).exists()]
        if taken:
            raise ValueError(f"{out / taken[0]} already exists ({len(taken)} file(s) in the way); "
                             "use another folder or --force")
    scenes = concept_scenes(concept, export_seeds(concept, count, offset))
    captions, _ = concept_prompts(scenes)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for name, pixels in zip(names, render_scenes(scenes), strict=True):
        image = Image.fromarray(pixels)
        if size != image.width:
            image = image.resize((size, size), Image.Resampling.NEAREST)
        files.append(_save_atomic(image, out / name))
    lines = "".join(f"{name}\t{caption}\n" for name, caption in zip(names, captions, strict=True))
    captions_file = out / CAPTIONS_FILE
    temporary = captions_file.with_name(f".{CAPTIONS_FILE}.tmp")
    temporary.write_text(lines, encoding="utf-8")
    os.replace(temporary, captions_file)
    return Export(concept=concept, files=files, captions=captions, captions_file=captions_file)


def _save_atomic(image: Image.Image, path: Path) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)
    return path
