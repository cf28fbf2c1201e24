"""Words of a prompt that the embedded toy base cannot draw, by slot (shape colour, background, shape, texture).

The toy base learned a closed vocabulary (:mod:`toyworld.vocab`): eight foreground colours, eight
background colours, six shapes, five textures. A prompt asking for "a black circle" gets a pink or
mauve circle with no word of warning, since the text encoder maps "black" somewhere near the colours
it knows. :func:`unknown_words` finds such words: a word is checked when it is a colour, shape or
texture word in plain English (the lexicons below, plus the toy world's own names), and reported when
the base does not know it in the slot where it stands ("black" is a background colour it knows, not
a shape colour).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toyworld.vocab import (
    BACKGROUND_COLOURS,
    BASE_SHAPES,
    BASE_TEXTURES,
    FOREGROUND_COLOURS,
    NOVEL_PALETTES,
    NOVEL_SHAPES,
    NOVEL_TEXTURES,
)

COLOUR_WORDS: frozenset[str] = frozenset({
    *FOREGROUND_COLOURS, *BACKGROUND_COLOURS, "grey", "brown", "gold", "golden", "silver", "beige", "maroon", "navy",
    "teal", "magenta", "violet", "indigo", "lime", "olive", "turquoise", "crimson", "tan", "lavender", "mauve",
    "amber", "scarlet", "ivory", "cream", "bronze", "copper", "peach", "coral", "azure",
})
SHAPE_WORDS: frozenset[str] = frozenset({
    *BASE_SHAPES, *(c.name for c in NOVEL_SHAPES), "hexagon", "pentagon", "octagon", "oval", "ellipse", "rectangle",
    "moon", "spiral", "cube", "sphere", "cone", "cylinder", "pyramid", "trapezoid", "rhombus", "parallelogram",
    "semicircle", "blob", "flower", "cloud", "drop", "teardrop", "shield", "kite", "line", "dot",
})
TEXTURE_WORDS: frozenset[str] = frozenset({
    *BASE_TEXTURES, *(c.name for c in NOVEL_TEXTURES), "wavy", "spotted", "plaid", "polka", "zigzagged", "marbled",
    "scaly", "furry", "woven", "hatched", "speckles", "swirly", "swirled", "tiled", "mottled", "gradient",
})
PALETTE_WORDS: frozenset[str] = frozenset(c.name for c in NOVEL_PALETTES)

_WORD = re.compile(r"[a-z]+")
SLOTS: dict[str, tuple[str, ...]] = {
    "shape colour": tuple(FOREGROUND_COLOURS),
    "background colour": tuple(BACKGROUND_COLOURS),
    "shape": BASE_SHAPES,
    "texture": BASE_TEXTURES,
    "palette": (),
}


@dataclass(frozen=True)
class UnknownWord:
    word: str
    slot: str  # one of SLOTS
    known: tuple[str, ...]  # what the base knows for that slot

    def message(self, adapters: tuple[str, ...] = ()) -> str:
        knows = f" (it knows {', '.join(self.known)})" if self.known else ""
        text = f"the embedded base cannot draw {self.word!r} as a {self.slot}{knows}"
        if adapters:
            return f"{text}; library adapters that add it: {', '.join(adapters)}"
        return f"{text}; no library adapter adds it"


def unknown_words(prompt: str) -> list[UnknownWord]:
    """The colour, shape, texture and palette words of ``prompt`` the toy base does not know where they stand."""
    words = _WORD.findall(prompt.lower())
    found: list[UnknownWord] = []
    for index, word in enumerate(words):
        nearby = words[index + 1 : index + 3]
        if word in COLOUR_WORDS:
            if "background" in nearby or "backdrop" in nearby:
                slot = "background colour"
            else:
                slot = "shape colour"
            if word not in SLOTS[slot] and not (word == "grey" and "gray" in SLOTS[slot]):
                found.append(UnknownWord(word, slot, SLOTS[slot]))
        elif word in SHAPE_WORDS and word not in BASE_SHAPES:
            found.append(UnknownWord(word, "shape", BASE_SHAPES))
        elif word in TEXTURE_WORDS and word not in BASE_TEXTURES:
            found.append(UnknownWord(word, "texture", BASE_TEXTURES))
        elif word in PALETTE_WORDS:
            found.append(UnknownWord(word, "palette", ()))
    unique: dict[tuple[str, str], UnknownWord] = {}
    for item in found:
        unique.setdefault((item.word, item.slot), item)
    return list(unique.values())
