"""Batches of toy-world samples, rendered in parallel and reproducible from seeds."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toyworld.render import render
from toyworld.scene import Scene, caption, sample_scene
from toyworld.vocab import LABEL_SPACES


@dataclass
class Samples:
    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    scenes: list[Scene]

    def label_indices(self) -> dict[str, np.ndarray]:
        """Per attribute, the class index of every sample (judge label space)."""
        out = {}
        for attribute, names in LABEL_SPACES.items():
            lookup = {name: i for i, name in enumerate(names)}
            out[attribute] = np.array([lookup[s.labels()[attribute]] for s in self.scenes], dtype=np.int64)
        return out


def _render_one(args: tuple[int, dict[str, object]]) -> tuple[np.ndarray, str, Scene]:
    seed, vocab = args
    scene = sample_scene(seed, **vocab)  # type: ignore[arg-type]
    return render(scene), caption(scene), scene


def render_scenes(scenes: Sequence[Scene]) -> np.ndarray:
    return np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, 32, 32, 3), np.uint8)


def make_samples(seeds: Sequence[int], workers: int = 1, **vocab: object) -> Samples:
    """Render one sample per seed; ``vocab`` is passed to :func:`sample_scene`."""
    jobs = [(int(seed), vocab) for seed in seeds]
    if workers > 1 and len(jobs) > 256:
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(_render_one, jobs, chunksize=256)
    else:
        results = [_render_one(job) for job in jobs]
    images = np.stack([r[0] for r in results])
    return Samples(images=images, captions=[r[1] for r in results], scenes=[r[2] for r in results])

# Disjoint seed ranges, so that no evaluation ever scores an image a model trained on.
SEEDS_BASE_TRAIN = 0
SEEDS_JUDGE_TRAIN = 10_000_000
SEEDS_JUDGE_EVAL = 20_000_000
SEEDS_BENCHMARK = 30_000_000
SEEDS_LORA = 40_000_000

# The vocabulary the judge trains and is scored on: everything, palettes less often.
JUDGE_VOCAB: dict[str, object] = {
    "shapes": LABEL_SPACES["shape"],
    "textures": LABEL_SPACES["texture"],
    "palettes": ("plain",) * 4 + LABEL_SPACES["palette"][1:],
}
