"""Composition quality on the toy world, read by the judge: ``python benchmarks/composition.py [--json]``.

Every (content x style) pair of the starter library (content: the novel shapes; style: the
novel textures and colour palettes; adapters found in ``--dir`` at run time, each file's kind
read from the toy world's novel concept of the same name) is rendered from ``--seeds``
prompts of ``combined_scenes`` (captions holding both trigger words) with every fusion
method: merge, switch, composite, orthogonal (seed 0), klora, gated (the training-free
schedule), gated_trained (the trained gate of ``assets/fusion-gate``; reported as missing
when there is none) and b4m (the training-free projection for ordinary LoRAs). Both gated
methods use adapter guidance (:mod:`fusion.guidance`); ``gated_unguided`` and
``gated_trained_unguided`` are the same without it, as ablations. Each
adapter acts at its preferred weight (``medley.preferred_weight``, 1.0 for the starters)
unless ``--weight`` is given. Images of one (pair, method) go through the product's render
path, ``pipeline.Studio.render`` (the adapters catalogued in a temporary MEDLEY_HOME, picked
by name with their roles, the captions used as they are), in one pipeline run, with the same
prompts and seeds for every method.

The judge reads each image back. Per image: content present (shape == the content
concept), style present (texture == the texture concept, palette == the palette concept),
both present, and attributes kept: the share of the scene's other labels (foreground and
background colour, plus the base texture under a palette or the plain palette under a
texture) read correctly. A palette recolours the image but the scene's labels keep the
underlying colour names, and the judge reads them through every palette (about 1.0 on
ground-truth renders), so colours are scored under palettes too. A "renders (ceiling)" row
scores the ground-truth renders of the same scenes the same way.

Pairs holding a concept of ``COMPOSITION_HELDOUT`` (kept out of everything tuned on
compositions) are scored apart: ``both_heldout`` is the headline, and ``best_method`` is
the method with the highest ``both_heldout`` (ties: the higher ``both``; no held-out pair
selected: the highest ``both``).

Triples (content + texture + palette, three adapters at once; ``--triples`` sampled,
seed 0) get the same metrics, "both" meaning all three present. K-LoRA and B4M compose
one content with one style adapter: in a triple the texture is their style and the
palette joins with role "other" (plainly summed).

Under ``--out`` (default ``benchmarks/out/composition/``): one PNG grid per method
(``pairs-<method>.png``, rows = ``--grid-pairs`` pairs, columns = seeds) beside the
ground-truth renders (``pairs-renders.png``), ``results.json`` (every pair and triple,
per method), and ``both_vs_weight.png``: both-present on the held-out pairs (at most
``--sweep-pairs``) against the LoRA weight (``--sweep-weights``) for merge and the best
method (needs matplotlib, the ``bench`` extra; without it the plot is skipped with a note).

Prints a table (never pass/fail); with ``--json`` the last line is a JSON object:
``{"methods": {name: {content, style, both, both_heldout, attributes_kept,
seconds_per_image}}, "best_method", "best_both_heldout", "triples": {name: both},
"pairs", "heldout_pairs", "seeds", ...}``; methods that could not run are listed under
``"missing"`` (name -> reason), not under ``"methods"``. Progress lines with an ETA go to
stderr.

The full default run renders about 4,000 images (72 pairs, 36 held-out, x 4 seeds x 10 methods,
16 triples and the weight sweep); each method's seconds per image are in its table, and the
README gives the last full run's time. On a CPU shared with training, use ``--threads 1``:
several threads on busy cores spin and run 10-30x slower. Quick look:
``--max-pairs 4 --seeds 2 --methods merge gated --triples 0 --sweep-weights``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from toyworld.concepts import COMPOSITION_HELDOUT, combined_scenes, concept_attribute, concept_prompts  # noqa: E402
from toyworld.dataset import SEEDS_BENCHMARK  # noqa: E402
from toyworld.vocab import LABEL_SPACES, NOVEL_CONCEPTS, NovelConcept  # noqa: E402

DEFAULT_DIR = ROOT / "assets" / "starter-library"
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "composition"
GATE_FILE = ROOT / "assets" / "fusion-gate" / "gate.safetensors"
# scene and noise seeds of the compositions: a range no other benchmark or training run uses
SEEDS_COMPOSITION = SEEDS_BENCHMARK + 1_000_000
MAX_SEEDS = 100
SWEEP_WEIGHTS = (0.6, 0.8, 1.0, 1.2)

# benchmark method name -> (fusion method, its options)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "merge": ("merge", {}),
    "switch": ("switch", {}),
    "composite": ("composite", {}),
    "orthogonal": ("orthogonal", {"seed": 0}),
    "klora": ("klora", {}),
    "gated": ("gated", {}),
    "gated_trained": ("gated", {"gate": True}),
    "b4m": ("b4m", {}),
    # ablations: the two gated variants without adapter guidance (every adapter in both CFG halves)
    "gated_unguided": ("gated", {"uncond": {}}),
    "gated_trained_unguided": ("gated", {"gate": True, "uncond": {}}),
}
# methods that compose exactly one content and one style adapter
ONE_CONTENT_ONE_STYLE = frozenset({"klora", "b4m"})
MethodTable = dict[str, tuple[str, dict[str, Any]]]


# ---------------------------------------------------------------- what to compose
@dataclass(frozen=True)
class Combo:
    """Concepts composed at once: one content, then a texture and/or a palette."""

    concepts: tuple[NovelConcept, ...]

    @property
    def name(self) -> str:
        return "+".join(c.name for c in self.concepts)

    @property
    def heldout(self) -> bool:
        return any(c.name in COMPOSITION_HELDOUT for c in self.concepts)

    def seeds(self, count: int) -> list[int]:
        """``count`` scene (and noise) seeds, fixed by the concepts alone."""
        if not 0 < count <= MAX_SEEDS:
            raise ValueError(f"seeds per combination must lie in 1..{MAX_SEEDS}, got {count}")
        key = 0
        for concept in self.concepts:
            key = key * (len(NOVEL_CONCEPTS) + 1) + NOVEL_CONCEPTS.index(concept) + 1
        start = SEEDS_COMPOSITION + key * MAX_SEEDS
        return list(range(start, start + count))


def concepts_from_names(names: Sequence[str]) -> tuple[list[NovelConcept], list[str]]:
    """The novel concepts named by adapter file stems (in vocabulary order), and the unknown stems."""
    by_name = {c.name: c for c in NOVEL_CONCEPTS}
    unknown = sorted(n for n in names if n not in by_name)
    return [c for c in NOVEL_CONCEPTS if c.name in names], unknown


def of_kind(concepts: Sequence[NovelConcept], kind: str) -> list[NovelConcept]:
    return [c for c in concepts if c.kind == kind]


def pair_combos(concepts: Sequence[NovelConcept]) -> list[Combo]:
    """Every content x style pair, style being a texture or a palette."""
    styles = of_kind(concepts, "style") + of_kind(concepts, "palette")
    return [Combo((c, s)) for c, s in product(of_kind(concepts, "content"), styles)]


def triple_combos(concepts: Sequence[NovelConcept], count: int, seed: int = 0) -> list[Combo]:
    """A seeded sample of ``count`` content x texture x palette triples (in product order)."""
    every = [Combo(t) for t in product(*(of_kind(concepts, k) for k in ("content", "style", "palette")))]
    if count >= len(every):
        return every
    picked = np.random.default_rng(seed).choice(len(every), size=max(count, 0), replace=False)
    return [every[i] for i in sorted(int(i) for i in picked)]


def spread(items: Sequence[Combo], count: int) -> list[Combo]:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(max(count, 0))]


def select_combos(combos: Sequence[Combo], limit: int | None) -> list[Combo]:
    """At most ``limit`` combinations, half held-out where possible, spread over the list, in list order."""
    if limit is None or limit >= len(combos):
        return list(combos)
    heldout = [c for c in combos if c.heldout]
    rest = [c for c in combos if not c.heldout]
    take_rest = min(len(rest), limit - min(len(heldout), math.ceil(limit / 2)))
    chosen = set(spread(heldout, limit - take_rest)) | set(spread(rest, take_rest))
    return [c for c in combos if c in chosen]


def roles_for(method: str, concepts: Sequence[NovelConcept]) -> list[str]:
    """Each adapter's role: shapes are content, textures and palettes style.

    K-LoRA and B4M take one content and one style adapter: beside a texture, a palette is "other".
    """
    roles = ["content" if c.kind == "content" else "style" for c in concepts]
    if method in ONE_CONTENT_ONE_STYLE and roles.count("style") > 1:
        roles = ["other" if c.kind == "palette" else r for r, c in zip(roles, concepts, strict=True)]
    return roles


# ---------------------------------------------------------------- scoring (pure)
@dataclass(frozen=True)
class ImageScore:
    content: bool  # every content concept read back
    style: bool  # every style concept (texture, palette) read back
    kept: float  # share of the scene's other attributes read back

    @property
    def both(self) -> bool:
        return self.content and self.style


def kept_attributes(concepts: Sequence[NovelConcept]) -> tuple[str, ...]:
    """The judge's attributes that the composed concepts do not decide."""
    decided = {concept_attribute(c) for c in concepts}
    return tuple(a for a in LABEL_SPACES if a not in decided)


def score_image(read: Mapping[str, str], expected: Mapping[str, str], concepts: Sequence[NovelConcept]) -> ImageScore:
    """One image's score from the judge's reading and the scene's labels."""

    def found(kinds: tuple[str, ...]) -> bool:
        return all(read[concept_attribute(c)] == c.name for c in concepts if c.kind in kinds)

    others = kept_attributes(concepts)
    kept = sum(read[a] == expected[a] for a in others) / len(others) if others else 1.0
    return ImageScore(content=found(("content",)), style=found(("style", "palette")), kept=kept)


def score_images(
    reads: Sequence[Mapping[str, str]], labels: Sequence[Mapping[str, str]], concepts: Sequence[NovelConcept]
) -> list[ImageScore]:
    return [score_image(r, e, concepts) for r, e in zip(reads, labels, strict=True)]


@dataclass
class ComboResult:
    combo: Combo
    method: str
    weights: tuple[float, ...]
    scores: list[ImageScore]
    seconds: float | None  # generation time of all its images (None: not generated)
    images: list[Any] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class MethodRow:
    content: float
    style: float
    both: float
    both_heldout: float | None  # None: no held-out combination was scored
    attributes_kept: float
    seconds_per_image: float | None
    images: int
    heldout_images: int

    def to_json(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "content": rounded(self.content),
            "style": rounded(self.style),
            "both": rounded(self.both),
            "both_heldout": rounded(self.both_heldout),
            "attributes_kept": rounded(self.attributes_kept),
            "seconds_per_image": rounded(self.seconds_per_image),
            "images": self.images,
            "heldout_images": self.heldout_images,
        }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarise(results: Sequence[ComboResult]) -> MethodRow:
    """One method's row over its combinations; held-out combinations also apart."""
    scores = [s for r in results for s in r.scores]
    if not scores:
        raise ValueError("no scored images to summarise")
    heldout = [s for r in results if r.combo.heldout for s in r.scores]
    timed = [r for r in results if r.seconds is not None]
    seconds = sum(r.seconds or 0.0 for r in timed) / sum(len(r.scores) for r in timed) if timed else None
    return MethodRow(
        content=_mean([s.content for s in scores]),
        style=_mean([s.style for s in scores]),
        both=_mean([s.both for s in scores]),
        both_heldout=_mean([s.both for s in heldout]) if heldout else None,
        attributes_kept=_mean([s.kept for s in scores]),
        seconds_per_image=seconds,
        images=len(scores),
        heldout_images=len(heldout),
    )


def summarise_methods(results: Sequence[ComboResult], methods: Sequence[str]) -> dict[str, MethodRow]:
    """{method: row} in ``methods`` order, for the methods with results."""
    rows = {}
    for method in methods:
        mine = [r for r in results if r.method == method]
        if mine:
            rows[method] = summarise(mine)
    return rows


def best_method(rows: Mapping[str, MethodRow]) -> str | None:
    """The method with the highest both_heldout (then both; the first listed on a tie).

    When no method has a held-out score, the highest ``both`` decides.
    """
    if not rows:
        return None
    if any(row.both_heldout is not None for row in rows.values()):
        candidates = {m: r for m, r in rows.items() if r.both_heldout is not None}
        return max(candidates, key=lambda m: (candidates[m].both_heldout, candidates[m].both))
    return max(rows, key=lambda m: rows[m].both)


def sweep_both(results: Sequence[ComboResult]) -> float:
    return _mean([s.both for r in results for s in r.scores])


# ---------------------------------------------------------------- generating
def resolve_methods(names: Sequence[str]) -> tuple[MethodTable, dict[str, str]]:
    """The runnable methods (the trained gate loaded once) and {method: why it is missing}."""
    table: MethodTable = {}
    missing: dict[str, str] = {}
    for name in names:
        fusion, options = METHODS[name]
        if options.get("gate") is True:
            if not GATE_FILE.exists():
                missing[name] = f"no trained gate in {GATE_FILE.parent.relative_to(ROOT)}"
                continue
            from fusion.gate import FusionGate

            options = {**options, "gate": FusionGate.load(GATE_FILE.parent)}
        table[name] = (fusion, options)
    return table, missing


def load_adapters(directory: Path) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """{concept name: adapter} of the starter files in ``directory``, their preferred weights (as
    the library reads them from header and sidecars; 1.0 when unset), and notes on files skipped."""
    from library.formats.reader import read_adapter
    from library.metadata import gather_info
    from library.sidecars import find_sidecars

    paths = {p.stem: p for p in sorted(directory.glob("*.safetensors"))}
    concepts, unknown = concepts_from_names(list(paths))
    notes = [f"{name}.safetensors: no novel concept of that name, skipped" for name in unknown]
    adapters: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for concept in concepts:
        path = paths[concept.name]
        try:
            adapters[concept.name] = read_adapter(path)
        except (OSError, ValueError) as error:  # e.g. a file being rewritten by a training run
            notes.append(f"{concept.name}.safetensors: unreadable ({error}), skipped")
            continue
        info = gather_info(path, adapters[concept.name].metadata, find_sidecars(path))
        weights[concept.name] = info.preferred_weight or 1.0
    return adapters, weights, notes


def fmt_seconds(seconds: float) -> str:
    whole = int(round(seconds))
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 60}m{whole % 60:02d}s"


class Progress:
    """Jobs done out of a (growing) total, with elapsed time and an ETA, on stderr."""

    def __init__(self, total: int = 0) -> None:
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def add(self, jobs: int) -> None:
        self.total += jobs

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * max(self.total - self.done, 0)
        print(f"[{self.done}/{self.total}] {label}  elapsed {fmt_seconds(elapsed)}  eta {fmt_seconds(eta)}",
              file=sys.stderr, flush=True)


@dataclass
class Runner:
    """Generates and judges (combination, method, weight) once each; later asks hit the cache."""

    studio: Any  # pipeline.Studio over a catalogue of the adapters (their names are the concepts')
    judge: Any
    adapters: dict[str, Any]
    preferred: dict[str, float]  # each adapter's preferred weight
    methods: MethodTable
    seeds: int
    steps: int
    progress: Progress
    cache: dict[tuple[str, str, tuple[float, ...]], ComboResult] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def weights(self, combo: Combo, weight: float | None) -> tuple[float, ...]:
        return tuple(self.preferred[c.name] if weight is None else weight for c in combo.concepts)

    def run(self, combo: Combo, method: str, weight: float | None = None) -> ComboResult | None:
        weights = self.weights(combo, weight)
        key = (combo.name, method, weights)
        label = f"{method:<13} {combo.name} w={'/'.join(f'{w:g}' for w in weights)}"
        if key in self.cache:
            self.progress.step(f"{label} (done before)")
            return self.cache[key]
        try:
            self.cache[key] = self._generate(combo, method, weights)
        except ValueError as error:  # a method refusing this set of adapters
            self.errors.setdefault(method, []).append(f"{combo.name}: {error}")
            self.progress.step(f"{label} refused: {error}")
            return None
        self.progress.step(label)
        return self.cache[key]

    def _generate(self, combo: Combo, method: str, weights: tuple[float, ...]) -> ComboResult:
        from pipeline import Pick, RenderRequest
        from toyworld.judge import read_labels

        seeds = combo.seeds(self.seeds)
        prompts, labels = concept_prompts(combined_scenes(combo.concepts, seeds))
        picks = [
            Pick(c.name, weight=w, role=role)
            for c, w, role in zip(combo.concepts, weights, roles_for(method, combo.concepts), strict=True)
        ]
        fusion, options = self.methods[method]
        started = time.perf_counter()
        images = self.studio.render(RenderRequest(prompt=prompts, seed=seeds, steps=self.steps, picks=picks,
                                                  fusion=fusion, fusion_options=options or {},
                                                  add_triggers=False)).images
        seconds = time.perf_counter() - started
        reads = read_labels(self.judge, np.stack([np.asarray(image) for image in images]))
        return ComboResult(combo, method, weights, score_images(reads, labels, combo.concepts), seconds, images)

    def warm_up(self, combo: Combo, method: str) -> None:
        """One untimed, unscored image, so that first-call costs stay out of the timings."""
        saved = self.seeds, self.steps
        self.seeds, self.steps = 1, 2
        try:
            self._generate(combo, method, self.weights(combo, None))
        finally:
            self.seeds, self.steps = saved

    def run_all(self, combos: Sequence[Combo], methods: Sequence[str], weight: float | None) -> list[ComboResult]:
        results = (self.run(combo, method, weight) for combo in combos for method in methods)
        return [r for r in results if r is not None]


def ceiling(judge: Any, combos: Sequence[Combo], seeds: int) -> list[ComboResult]:
    """The ground-truth renders of the same scenes, scored the same way."""
    from toyworld.dataset import render_scenes
    from toyworld.judge import read_labels

    results = []
    for combo in combos:
        scenes = combined_scenes(combo.concepts, combo.seeds(seeds))
        _, labels = concept_prompts(scenes)
        renders = render_scenes(scenes)
        scores = score_images(read_labels(judge, renders), labels, combo.concepts)
        results.append(ComboResult(combo, "renders", (), scores, None, [np.asarray(r) for r in renders]))
    return results


# ---------------------------------------------------------------- pictures
def save_grids(results: Sequence[ComboResult], combos: Sequence[Combo], out: Path) -> list[Path]:
    """One PNG per method: a row per combination, a column per seed."""
    from PIL import Image

    from pipeline.grid import save_grid

    wanted = {c.name for c in combos}
    by_method: dict[str, list[ComboResult]] = {}
    for result in results:
        if result.combo.name in wanted and result.images:
            by_method.setdefault(result.method, []).append(result)
    paths = []
    for method, rows in by_method.items():
        images = [[i if isinstance(i, Image.Image) else Image.fromarray(i) for i in r.images] for r in rows]
        paths.append(save_grid(images, [r.combo.name for r in rows], out / f"pairs-{method}.png"))
    return paths


def save_plot(sweep: Mapping[str, Mapping[float, float]], path: Path, label: str) -> Path | None:
    """both-present against the LoRA weight, one line per method (None: matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(5, 3.5), dpi=120)
    for method, points in sweep.items():
        weights = sorted(points)
        axes.plot(weights, [points[w] for w in weights], marker="o", label=method)
    axes.set_xlabel("LoRA weight (every adapter)")
    axes.set_ylabel(f"both present ({label})")
    axes.set_ylim(0.0, 1.0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


# ---------------------------------------------------------------- report
def print_rows(title: str, rows: Mapping[str, MethodRow], missing: Mapping[str, str], all_label: str = "both") -> None:
    print(title)
    heldout_label = f"{all_label}_heldout"
    print(f"{'method':<18}{'content':>9}{'style':>9}{all_label:>9}{heldout_label:>15}{'attr_kept':>11}{'s/image':>9}")
    for method, row in rows.items():
        heldout = "-" if row.both_heldout is None else f"{row.both_heldout:.3f}"
        seconds = "-" if row.seconds_per_image is None else f"{row.seconds_per_image:.3f}"
        print(f"{method:<18}{row.content:>9.3f}{row.style:>9.3f}{row.both:>9.3f}{heldout:>15}"
              f"{row.attributes_kept:>11.3f}{seconds:>9}")
    for method, reason in missing.items():
        print(f"{method:<18}missing: {reason}")


def print_sweep(sweep: Mapping[str, Mapping[float, float]], label: str) -> None:
    weights = sorted({w for points in sweep.values() for w in points})
    print(f"weight sweep: both present on {label}")
    print(f"{'method':<18}" + "".join(f"{w:>8g}" for w in weights))
    for method, points in sweep.items():
        print(f"{method:<18}" + "".join(f"{points[w]:>8.3f}" if w in points else f"{'-':>8}" for w in weights))


def per_combo_records(results: Sequence[ComboResult]) -> list[dict[str, Any]]:
    return [
        {"combo": r.combo.name, "heldout": r.combo.heldout, "method": r.method, "weights": list(r.weights),
         **{k: v for k, v in summarise([r]).to_json().items() if k not in ("images", "heldout_images")}}
        for r in results
    ]


# ---------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="starter library folder")
    parser.add_argument("--seeds", type=int, default=4, help=f"prompts (seeds) per combination, 1..{MAX_SEEDS}")
    parser.add_argument("--max-pairs", type=int, default=None, help="at most this many pairs (half held-out)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--weight", type=float, default=None, help="every adapter's weight (default: its preferred)")
    parser.add_argument("--triples", type=int, default=16, help="content+texture+palette triples (0: none)")
    parser.add_argument("--grid-pairs", type=int, default=4, help="pairs shown in each method's grid")
    parser.add_argument("--sweep-weights", type=float, nargs="*", default=list(SWEEP_WEIGHTS),
                        help="weights of the sweep (none: no sweep)")
    parser.add_argument("--sweep-pairs", type=int, default=12, help="held-out pairs of the weight sweep")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.seeds <= MAX_SEEDS:
        parser.error(f"--seeds must lie in 1..{MAX_SEEDS}")
    return args


def sweep_methods(best: str | None, table: MethodTable) -> list[str]:
    methods = ["merge"] if "merge" in table else []
    if best is not None and best not in methods:
        methods.append(best)
    return methods


@dataclass
class Outcome:
    """Everything one run measured, for the table and the JSON line."""

    pairs: list[Combo]
    all_pairs: int
    triples: list[Combo]
    rows: dict[str, MethodRow]
    triple_rows: dict[str, MethodRow]
    ceiling: MethodRow
    best: str | None
    missing: dict[str, str]
    errors: dict[str, list[str]]
    sweep: dict[str, dict[float, float]]
    sweep_label: str
    sweep_pairs: int
    files: list[Path]
    plot: Path | None
    notes: list[str]
    adapters: list[str]

    @property
    def best_heldout(self) -> float | None:
        row = self.rows.get(self.best) if self.best else None
        return None if row is None else row.both_heldout


def run_sweep(runner: Runner, pairs: Sequence[Combo], methods: Sequence[str], weights: Sequence[float]
              ) -> dict[str, dict[float, float]]:
    runner.progress.add(len(methods) * len(weights) * len(pairs))
    return {m: {w: sweep_both(runner.run_all(pairs, [m], w)) for w in weights} for m in methods}


def catalogued_studio(base: Any, directory: Path, names: Sequence[str]) -> Any:
    """A ``pipeline.Studio`` whose catalogue (in a temporary MEDLEY_HOME) holds the adapters ``names`` of
    ``directory`` under their concept names: the benchmark renders through the product path."""
    import tempfile

    from library.catalog import Catalog
    from pipeline import Studio

    catalog = Catalog(Path(tempfile.mkdtemp(prefix="medley-composition-")), register_starters=False)
    for name in names:
        record = catalog.register(directory / f"{name}.safetensors", source="starter")
        if record.name != name:
            catalog.edit(record.name, name=name)
    return Studio(base, catalog)


def measure(args: argparse.Namespace) -> Outcome:
    adapters, preferred, notes = load_adapters(args.dir)
    concepts, _ = concepts_from_names(list(adapters))
    all_pairs = pair_combos(concepts)
    if not all_pairs:
        raise SystemExit(f"no content x style pair of adapters in {args.dir}; run `python -m training.starter_library`")
    pairs = select_combos(all_pairs, args.max_pairs)
    triples = triple_combos(concepts, args.triples)
    table, missing = resolve_methods(args.methods)
    methods = list(table)
    if args.sweep_weights and "merge" not in table:  # the sweep's reference, even when --methods leaves it out
        table = {**table, "merge": METHODS["merge"]}

    import torch

    from pipeline import load_base
    from toyworld.judge import Judge

    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_base(None, device=args.device)
    base.pipe.set_progress_bar_config(disable=True)
    judge = Judge.load()
    progress = Progress((len(pairs) + len(triples)) * len(methods))
    runner = Runner(catalogued_studio(base, args.dir, sorted(adapters)), judge, adapters, preferred, table,
                    args.seeds, args.steps, progress)
    if methods:
        runner.warm_up(pairs[0], methods[0])
    pair_results = runner.run_all(pairs, methods, args.weight)
    rows = summarise_methods(pair_results, methods)
    ceiling_results = ceiling(judge, pairs, args.seeds)
    triple_rows = summarise_methods(runner.run_all(triples, methods, args.weight), methods)
    best = best_method(rows)

    heldout = [p for p in pairs if p.heldout]
    sweep_pairs = spread(heldout or pairs, args.sweep_pairs)
    sweep = run_sweep(runner, sweep_pairs, sweep_methods(best, table), args.sweep_weights) if args.sweep_weights else {}
    sweep_label = f"{len(sweep_pairs)} {'held-out ' if heldout else ''}pairs"

    files = save_grids(pair_results + ceiling_results, select_combos(pairs, args.grid_pairs), args.out)
    records = per_combo_records(list(runner.cache.values()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    files.append(args.out / "results.json")
    plot = save_plot(sweep, args.out / "both_vs_weight.png", sweep_label) if sweep else None
    return Outcome(pairs, len(all_pairs), triples, rows, triple_rows, summarise(ceiling_results), best, missing,
                   runner.errors, sweep, sweep_label, len(sweep_pairs), files, plot, notes, sorted(adapters))


def report(outcome: Outcome, args: argparse.Namespace) -> None:
    weight = "preferred" if args.weight is None else f"{args.weight:g}"
    heldout = sum(p.heldout for p in outcome.pairs)
    for note in outcome.notes:
        print(f"note: {note}")
    print_rows(
        f"composition: {len(outcome.pairs)} of {outcome.all_pairs} content x style pairs ({heldout} held-out) "
        f"x {args.seeds} seeds, {args.steps} steps, weight {weight}",
        {**outcome.rows, "renders (ceiling)": outcome.ceiling},
        outcome.missing,
    )
    if outcome.best is not None:
        value = "-" if outcome.best_heldout is None else f"{outcome.best_heldout:.3f}"
        print(f"best method (both present, held-out pairs): {outcome.best} {value}")
    print()
    if outcome.triples:
        title = f"triples: {len(outcome.triples)} content + texture + palette x {args.seeds} seeds"
        print_rows(title, outcome.triple_rows, outcome.missing, all_label="all3")
    else:
        print("triples: none (the library needs shapes, textures and palettes)")
    for method, errors in outcome.errors.items():
        print(f"{method}: {len(errors)} combinations refused, first: {errors[0]}")
    if outcome.sweep:
        print()
        print_sweep(outcome.sweep, outcome.sweep_label)
    print()
    print(f"files: {', '.join(str(p) for p in outcome.files)}")
    if outcome.sweep:
        print(f"plot: {outcome.plot}" if outcome.plot else "plot skipped: matplotlib is not installed "
              "(pip install -e '.[bench]')")


def json_record(outcome: Outcome, args: argparse.Namespace) -> dict[str, Any]:
    heldout = outcome.best_heldout
    return {
        "methods": {m: r.to_json() for m, r in outcome.rows.items()},
        "best_method": outcome.best,
        "best_both_heldout": None if heldout is None else round(heldout, 4),
        "triples": {m: round(r.both, 4) for m, r in outcome.triple_rows.items()},
        "triple_methods": {m: r.to_json() for m, r in outcome.triple_rows.items()},
        "ceiling": outcome.ceiling.to_json(),
        "missing": outcome.missing,
        "errors": {m: len(e) for m, e in outcome.errors.items()},
        "sweep": {m: {f"{w:g}": round(v, 4) for w, v in points.items()} for m, points in outcome.sweep.items()},
        "sweep_pairs": outcome.sweep_pairs,
        "pairs": len(outcome.pairs),
        "heldout_pairs": sum(p.heldout for p in outcome.pairs),
        "triple_count": len(outcome.triples),
        "seeds": args.seeds,
        "steps": args.steps,
        "weight": args.weight,
        "adapters": outcome.adapters,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    outcome = measure(args)
    report(outcome, args)
    if args.json:
        print(json.dumps(json_record(outcome, args)))


if __name__ == "__main__":
    main()
