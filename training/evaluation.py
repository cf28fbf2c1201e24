"""Judge-scored quality of a trained adapter on the toy world.

- trigger accuracy: share of fresh trigger prompts (``a red <trigger> on a blue background``)
  in whose image the judge finds the concept (its shape, texture or palette);
- Knowledge Preservation (CAT's KPS, on the toy world): share of class prompts without the
  trigger (base shapes, textures: ``a red circle on a blue background``) in whose image the
  judge still finds what the prompt asked for, with the adapter applied.

Seeds are disjoint from the starter library's and the exported training images'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from library.lora import LoraAdapter
from toyworld.concepts import concept_attribute, concept_prompts, concept_scenes
from toyworld.dataset import SEEDS_BENCHMARK
from toyworld.judge import Judge, read_labels
from toyworld.scene import caption, sample_scene
from toyworld.vocab import NOVEL_CONCEPTS, NovelConcept

SEEDS_TRIGGER_EVAL = SEEDS_BENCHMARK + 3_000_000
SEEDS_KPS_EVAL = SEEDS_BENCHMARK + 4_000_000


@dataclass
class Scored:
    score: float
    prompts: list[str]
    hits: list[bool]


def _render(base, prompts: list[str], seeds: list[int], adapter: LoraAdapter | None, role: str,  # type: ignore[no-untyped-def]
            steps: int, weight: float) -> np.ndarray:
    from fusion import AdapterSpec
    from pipeline.generate import generate

    specs = [AdapterSpec("evaluated", adapter, weight=weight, role=role)] if adapter is not None else []
    images = generate(base, prompts, seed=seeds, steps=steps, adapters=specs).images
    return np.stack([np.asarray(image.convert("RGB")) for image in images])


def _role(concept: NovelConcept) -> str:
    return "content" if concept.kind == "content" else "style"


def trigger_accuracy(base, judge: Judge, adapter: LoraAdapter, concept: NovelConcept, count: int = 64,  # type: ignore[no-untyped-def]
                     steps: int = 20, weight: float = 1.0) -> Scored:
    seed0 = SEEDS_TRIGGER_EVAL + NOVEL_CONCEPTS.index(concept) * 10_000
    seeds = list(range(seed0, seed0 + count))
    prompts, labels = concept_prompts(concept_scenes(concept, seeds))
    read = read_labels(judge, _render(base, prompts, seeds, adapter, _role(concept), steps, weight))
    attribute = concept_attribute(concept)
    hits = [r[attribute] == label[attribute] for r, label in zip(read, labels, strict=True)]
    return Scored(float(np.mean(hits)), prompts, hits)


def knowledge_preservation(base, judge: Judge, adapter: LoraAdapter | None, concept: NovelConcept,  # type: ignore[no-untyped-def]
                           count: int = 64, steps: int = 20, weight: float = 1.0) -> Scored:
    """KPS: the adapter applied to prompts of the base vocabulary (no trigger); None scores the base alone."""
    seeds = list(range(SEEDS_KPS_EVAL, SEEDS_KPS_EVAL + count))
    scenes = [sample_scene(seed) for seed in seeds]  # base shapes, colours and textures
    prompts = [caption(scene) for scene in scenes]
    attribute = concept_attribute(concept)
    read = read_labels(judge, _render(base, prompts, seeds, adapter, _role(concept), steps, weight))
    hits = [r[attribute] == scene.labels()[attribute] for r, scene in zip(read, scenes, strict=True)]
    return Scored(float(np.mean(hits)), prompts, hits)
