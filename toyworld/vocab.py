"""The toy world's vocabulary: base concepts the embedded model learns, and
held-out novel concepts (with made-up trigger words) reserved for LoRAs.

Every list here is ordered and its order is part of the judge's label space:
append new entries at the end, never reorder.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

IMAGE_SIZE = 32

# Colours used for the foreground shape.
FOREGROUND_COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 170, 60),
    "cyan": (40, 210, 220),
    "blue": (40, 70, 220),
    "purple": (140, 50, 190),
    "pink": (250, 130, 190),
}

# Colours used for the background (foreground and background always differ).
BACKGROUND_COLOURS: dict[str, RGB] = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (245, 225, 40),
    "purple": (140, 50, 190),
}

BASE_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
BASE_TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered", "outlined")
SIZES: tuple[str, ...] = ("small", "medium", "large")
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")


@dataclass(frozen=True)
class NovelConcept:
    """A concept the base model never sees, reachable only through an adapter."""

    name: str  # the plain-English name (used in labels and descriptions)
    trigger: str  # the made-up word a prompt uses to ask for it
    kind: str  # "content" (a shape), "style" (a texture) or "palette"
    description: str


NOVEL_SHAPES: tuple[NovelConcept, ...] = (
    NovelConcept("heart", "hartok", "content", "a heart shape with two rounded lobes"),
    NovelConcept("crescent", "lunivex", "content", "a crescent moon shape"),
    NovelConcept("arrow", "sagitrel", "content", "an arrow pointing right"),
    NovelConcept("bolt", "fulgram", "content", "a zigzag lightning bolt"),
    NovelConcept("ring", "anulon", "content", "a thick ring, a disc with a hole"),
    NovelConcept("hourglass", "klepsydro", "content", "an hourglass of two touching triangles"),
    NovelConcept("tee", "taudrix", "content", "a T-shaped glyph"),
    NovelConcept("chevron", "vexilo", "content", "a chevron pointing up"),
)

NOVEL_TEXTURES: tuple[NovelConcept, ...] = (
    NovelConcept("diagonal", "slantor", "style", "diagonal stripes"),
    NovelConcept("grid", "gridwel", "style", "a thin grid of lines"),
    NovelConcept("concentric", "ripplon", "style", "concentric rings from the centre"),
    NovelConcept("zigzag", "zagrith", "style", "horizontal zigzag bands"),
    NovelConcept("crosshatch", "hatchery", "style", "crossed diagonal hatching"),
    NovelConcept("vertical", "pillarn", "style", "vertical stripes"),
    NovelConcept("gradient", "fadewick", "style", "a dark-to-light vertical gradient"),
    NovelConcept("speckled", "sprinkel", "style", "random speckles"),
)

NOVEL_PALETTES: tuple[NovelConcept, ...] = (
    NovelConcept("pastel", "mellowin", "palette", "soft pastel colours washed toward white"),
    NovelConcept("dusk", "noctavel", "palette", "dim colours tinted toward dark blue"),
    NovelConcept("sepia", "umbrath", "palette", "warm brown-tinted colours"),
    NovelConcept("neon", "glarix", "palette", "a glowing halo around the shape"),
)

PALETTES: tuple[str, ...] = ("plain",) + tuple(c.name for c in NOVEL_PALETTES)
ALL_SHAPES: tuple[str, ...] = BASE_SHAPES + tuple(c.name for c in NOVEL_SHAPES)
ALL_TEXTURES: tuple[str, ...] = BASE_TEXTURES + tuple(c.name for c in NOVEL_TEXTURES)
NOVEL_CONCEPTS: tuple[NovelConcept, ...] = NOVEL_SHAPES + NOVEL_TEXTURES + NOVEL_PALETTES

# Label spaces of the judge, attribute -> ordered class names.
LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "shape": ALL_SHAPES,
    "foreground": tuple(FOREGROUND_COLOURS),
    "background": tuple(BACKGROUND_COLOURS),
    "texture": ALL_TEXTURES,
    "palette": PALETTES,
}


def novel_concept(name_or_trigger: str) -> NovelConcept:
    """Find a novel concept by its name or its trigger word."""
    for concept in NOVEL_CONCEPTS:
        if name_or_trigger in (concept.name, concept.trigger):
            return concept
    raise KeyError(f"no novel concept named or triggered by {name_or_trigger!r}")
