"""Scenes and prompts for one novel concept: what an adapter for it trains on and is scored on.

A content concept is a novel shape drawn with base colours and textures; a style
concept is a novel texture on base shapes; a palette concept recolours base
scenes. Every caption names the concept by its trigger word, so a prompt for it
reads like ``a red hartok on a blue background``.
"""

from __future__ import annotations

from collections.abc import Sequence

from toyworld.scene import Scene, caption, sample_scene
from toyworld.vocab import BASE_SHAPES, BASE_TEXTURES, NovelConcept

# Novel concepts kept out of everything tuned on compositions (the trained fusion gate, the
# gated schedules): the composition benchmark scores the pairs that hold one of them apart,
# as its headline "held-out" figure.
COMPOSITION_HELDOUT: frozenset[str] = frozenset({"ring", "tee", "concentric", "gradient", "dusk"})

# the judge attribute that shows each kind of concept
ATTRIBUTE_OF_KIND: dict[str, str] = {"content": "shape", "style": "texture", "palette": "palette"}


def concept_attribute(concept: NovelConcept) -> str:
    return ATTRIBUTE_OF_KIND[concept.kind]


def concept_vocab(concept: NovelConcept) -> dict[str, Sequence[str]]:
    """The :func:`sample_scene` vocabulary that puts ``concept`` into every scene."""
    if concept.kind == "content":
        return {"shapes": (concept.name,), "textures": BASE_TEXTURES}
    if concept.kind == "style":
        return {"shapes": BASE_SHAPES, "textures": (concept.name,)}
    return {"shapes": BASE_SHAPES, "textures": BASE_TEXTURES, "palettes": (concept.name,)}


def concept_scenes(concept: NovelConcept, seeds: Sequence[int], layout: bool = True) -> list[Scene]:
    vocab = concept_vocab(concept)
    return [sample_scene(int(seed), layout=layout, **vocab) for seed in seeds]  # type: ignore[arg-type]


def combined_scenes(concepts: Sequence[NovelConcept], seeds: Sequence[int], layout: bool = True) -> list[Scene]:
    """Scenes holding several concepts at once (one content, one style, one palette at most)."""
    vocab: dict[str, Sequence[str]] = {"shapes": BASE_SHAPES, "textures": BASE_TEXTURES}
    seen: set[str] = set()
    for concept in concepts:
        if concept.kind in seen:
            raise ValueError(f"two {concept.kind} concepts cannot share one scene")
        seen.add(concept.kind)
        key = {"content": "shapes", "style": "textures", "palette": "palettes"}[concept.kind]
        vocab[key] = (concept.name,)
    return [sample_scene(int(seed), layout=layout, **vocab) for seed in seeds]  # type: ignore[arg-type]


def concept_prompts(scenes: Sequence[Scene]) -> tuple[list[str], list[dict[str, str]]]:
    """Captions (with trigger words) and the labels the judge should read back."""
    return [caption(s) for s in scenes], [s.labels() for s in scenes]


def strip_trigger(prompt: str, concept: NovelConcept, class_word: str | None = None) -> str:
    """The prompt with the concept's trigger replaced by a class word (or removed): CAT's class prompt."""
    replacement = class_word if class_word is not None else {"content": "shape", "style": "", "palette": ""}[
        concept.kind
    ]
    words = [replacement if w.strip(",") == concept.trigger else w for w in prompt.split(" ")]
    text = " ".join(w for w in words if w)
    return text.replace(", palette", "").replace(" ,", ",")
