"""Score fusion settings with the judge on the fusion gate's training pairs.

Shared by the scripts that tune a composition knob (:mod:`training.gate_strength`,
:mod:`training.guidance_gains`): every candidate renders the same composed prompts of the
training pairs (:func:`training.fusion_gate.training_pairs`: no concept of
:data:`toyworld.concepts.COMPOSITION_HELDOUT`, so the composition benchmark's held-out pairs stay
unseen), from seeds of the script's own (``offset`` into each pair's seed block, apart from the
gate's training and validation seeds), and the judge reads shape, texture and palette back.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from toyworld.concepts import combined_scenes, concept_attribute, concept_prompts
from training.fusion_gate import Pair, load_starters, pair_seed0, training_pairs

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True)
class Score:
    content: float  # share of images showing the content concept
    style: float  # ... the style concept
    both: float  # ... both at once
    images: int


def tuning_seeds(pair: Pair, count: int, offset: int) -> list[int]:
    start = pair_seed0(pair) + offset
    return list(range(start, start + count))


def score_options(base: Any, judge: Any, pairs: Sequence[Pair], seeds: int, offset: int,
                  fusion_options: Mapping[str, Any], steps: int = 20) -> Score:
    """Render ``seeds`` composed prompts per pair with the gated method under ``fusion_options``; judge them."""
    from pipeline.generate import generate
    from toyworld.judge import read_labels

    content_hits: list[bool] = []
    style_hits: list[bool] = []
    for pair in pairs:
        concepts = (pair[0].concept, pair[1].concept)
        pair_seeds = tuning_seeds(pair, seeds, offset)
        prompts, _ = concept_prompts(combined_scenes(concepts, pair_seeds))
        specs = [starter.spec() for starter in pair]
        images = generate(base, prompts, seed=pair_seeds, steps=steps, adapters=specs, fusion="gated",
                          fusion_options=dict(fusion_options)).images
        reads = read_labels(judge, np.stack([np.asarray(image.convert("RGB")) for image in images]))
        for read in reads:
            content_hits.append(read[concept_attribute(pair[0].concept)] == pair[0].name)
            style_hits.append(read[concept_attribute(pair[1].concept)] == pair[1].name)
    both = [c and s for c, s in zip(content_hits, style_hits, strict=True)]
    return Score(float(np.mean(content_hits)), float(np.mean(style_hits)), float(np.mean(both)), len(both))


def load_tuning(library: Path, max_pairs: int | None) -> tuple[list[Pair], Any, Any]:
    """The training pairs of the starters in ``library`` (at most ``max_pairs``, spread), the
    embedded base on the CPU (no progress bars) and the judge; exits when there is no pair."""
    from pipeline import load_base
    from toyworld.judge import Judge

    pairs = spread_pairs(training_pairs(load_starters(library)), max_pairs)
    if not pairs:
        raise SystemExit("no (content, style) training pair in the library")
    base = load_base(None, device="cpu")
    base.pipe.set_progress_bar_config(disable=True)
    return pairs, base, Judge.load()


def best_of(scores: Mapping[C, Score], cost: Mapping[C, float]) -> C:
    """Highest both-present share; ties go to the smaller ``cost``, then to the first listed."""
    order = list(scores)
    return max(order, key=lambda c: (round(scores[c].both, 9), -cost[c], -order.index(c)))


def spread_pairs(pairs: Sequence[Pair], limit: int | None) -> list[Pair]:
    """At most ``limit`` pairs, evenly spaced over ``pairs``."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    return [pairs[i * len(pairs) // limit] for i in range(max(limit, 1))]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
