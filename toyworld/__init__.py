"""The procedural toy world: deterministic images, captions and labels, and the judge."""

from toyworld.render import render
from toyworld.scene import Scene, caption, sample_scene
from toyworld.vocab import (
    ALL_SHAPES,
    ALL_TEXTURES,
    BACKGROUND_COLOURS,
    BASE_SHAPES,
    BASE_TEXTURES,
    FOREGROUND_COLOURS,
    IMAGE_SIZE,
    LABEL_SPACES,
    NOVEL_CONCEPTS,
    NOVEL_PALETTES,
    NOVEL_SHAPES,
    NOVEL_TEXTURES,
    PALETTES,
    NovelConcept,
    novel_concept,
)

__all__ = [
    "ALL_SHAPES",
    "ALL_TEXTURES",
    "BACKGROUND_COLOURS",
    "BASE_SHAPES",
    "BASE_TEXTURES",
    "FOREGROUND_COLOURS",
    "IMAGE_SIZE",
    "LABEL_SPACES",
    "NOVEL_CONCEPTS",
    "NOVEL_PALETTES",
    "NOVEL_SHAPES",
    "NOVEL_TEXTURES",
    "PALETTES",
    "NovelConcept",
    "Scene",
    "caption",
    "generate",
    "novel_concept",
    "render",
    "sample_scene",
]


def generate(seed: int, **vocab: object) -> tuple["object", str, dict[str, str]]:
    """seed -> (uint8 image [H, W, 3], caption, labels), over the given vocabularies."""
    scene = sample_scene(seed, **vocab)  # type: ignore[arg-type]
    return render(scene), caption(scene), scene.labels()
