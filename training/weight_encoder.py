"""Reproduce the weight encoder: ``python -m training.weight_encoder [--loras N] [--steps N] [--out DIR]``.

1. The corpus: hundreds of tiny LoRAs (rank 4, attention projections only, ``--lora-steps``
   steps at batch ``--lora-batch``) trained on the embedded toy base, each with a one-line
   description. Three families, 321 distinct descriptions:

   - ``novel``: a made-up trigger word draws one of the toy world's 20 novel concepts (a new
     shape, texture or palette), as a starter adapter does; 5 variants each;
   - ``named``: a made-up trigger word stands for base vocabulary: a star, a striped texture,
     the colour red, a red star, a striped star (97 concepts; the singles 3 variants each);
   - ``override``: no trigger; the LoRA changes what any prompt gets: every shape red, every
     background blue, every shape a striped star, red on blue, ... (204 concepts; the singles
     2 variants each).

   A variant differs in seed (images, captions, initialisation, batches) and, where the
   concept has a trigger, in the trigger word: variant 0 of a novel concept uses its own
   trigger, every other variant a fresh made-up word, so the encoder cannot key on the word.
   Variants come round by round (every concept's variant 0 first), so ``--loras N`` keeps
   the widest spread of descriptions. Each LoRA is written (atomically) to
   ``runs/weight-encoder-corpus/<settings>/<concept>-v<variant>.safetensors``, a kohya file
   whose header holds its description: a re-run skips the LoRAs already there, a kill loses
   only those in flight.

2. The encoder: :func:`retrieval.weight_encoder_training.train_weight_encoder` (symmetric
   InfoNCE against the MiniLM embeddings of the descriptions) on every corpus LoRA except
   those of :data:`HELDOUT_CONCEPTS`, saved to ``assets/weight-encoder/`` (``model.safetensors``,
   ``config.json``, ``report.json``, each written atomically).

:data:`HELDOUT_CONCEPTS` are novel concepts whose LoRAs are trained into the corpus but never
shown to the encoder: ``benchmarks/retrieval_quality.py`` retrieves them from their weights
alone, as the measure of generalisation. They are two shapes, two textures and a palette, each
with relatives among the trained concepts (ring: circle, crescent; chevron: triangle, arrow;
vertical: striped, diagonal; crosshatch: checkered, grid, diagonal; sepia: the other palettes
and the colour LoRAs), since a weight encoder can only place a new concept by its likeness to
the concepts it saw.

Time, measured on 2 CPU cores (one torch thread per LoRA): a tiny LoRA of the defaults (20 steps
at batch 8) takes about 4.5 s (1 s of set-up, then about 0.17 s a step, of which only 0.016 s
per sample: steps cost more than batch), so ``--workers 2`` builds the 466 LoRAs in about
18 minutes; the encoder (1000 steps at batch 32, about 0.14 s a step on one thread) adds about
2. The default corpus plus encoder is about 20 minutes; ``--loras`` and ``--lora-steps`` trade
it against quality (30 steps: about 6 s a LoRA).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from library.files import write_atomic
from library.formats.reader import read_adapter
from library.formats.writer import write_kohya
from library.lora import LoraAdapter
from library.metadata import AdapterInfo
from retrieval.embedders.base import Embedder
from retrieval.embedders.novelty import Novelty
from retrieval.embedders.weights import WeightEncoder, WeightEncoderConfig, save_weight_encoder
from retrieval.paths import WEIGHT_ENCODER_DIR
from retrieval.weight_encoder_training import TrainingReport, train_weight_encoder
from toyworld.concepts import concept_attribute, concept_scenes
from toyworld.dataset import render_scenes
from toyworld.scene import Scene, caption, sample_scene
from toyworld.vocab import BACKGROUND_COLOURS, BASE_SHAPES, BASE_TEXTURES, FOREGROUND_COLOURS, NOVEL_CONCEPTS
from training.lora_trainer import ATTENTION_TARGETS, LoraTrainer, LoraTrainingConfig, TrainingData

CORPUS_ROOT = Path(__file__).resolve().parent.parent / "runs" / "weight-encoder-corpus"
REPORT_FILE = "report.json"
# Novel concepts kept out of the encoder's training (see the module docstring).
HELDOUT_CONCEPTS: tuple[str, ...] = ("ring", "chevron", "vertical", "crosshatch", "sepia")
# Trained concepts that a second encoder does not see: its recall on them chooses the novelty correction.
VALIDATION_CONCEPTS: tuple[str, ...] = ("hourglass", "diagonal", "pastel")
NOVELTY_K: tuple[int, ...] = (1, 2, 3)
NOVELTY_BETA: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
# Scene seeds of the corpus: disjoint from every other seed range of the toy world (toyworld.dataset).
SEEDS_CORPUS = 60_000_000
SEEDS_NOVELTY_QUERIES = SEEDS_CORPUS + 9_000_000  # the captions that choose the novelty correction
FAMILIES: tuple[str, ...] = ("novel", "named", "override", "named-pair", "override-pair")
VARIANTS: dict[str, int] = {"novel": 5, "named": 3, "override": 2, "named-pair": 1, "override-pair": 1}
KIND_WORDS: dict[str, str] = {"content": "shape", "style": "texture", "palette": "palette"}
SYLLABLES: tuple[str, ...] = ("ka", "lo", "mi", "zu", "rek", "tan", "vo", "shi", "qua", "bri", "dol", "fen", "gar",
                              "hix", "jup", "nor", "pel", "sav", "tor", "wim")
BASE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": BASE_SHAPES,
    "foreground": tuple(FOREGROUND_COLOURS),
    "background": tuple(BACKGROUND_COLOURS),
    "texture": BASE_TEXTURES,
}
# the sample_scene() argument that fixes each judge attribute
SCENE_ARGUMENT: dict[str, str] = {"shape": "shapes", "foreground": "foregrounds", "background": "backgrounds",
                                  "texture": "textures", "palette": "palettes"}
CORPUS_KEY = "medley.corpus"

Labels = tuple[tuple[str, str], ...]  # (judge attribute, value) pairs a LoRA fixes


# -- the concepts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusConcept:
    """What one family of corpus LoRAs learns: the scene attributes it fixes, and its description."""

    key: str  # unique and file-safe, e.g. ``novel-heart``, ``override-foreground-red``
    family: str
    description: str  # the text the encoder learns to land on
    kind: str  # the catalogue kind: content (it sets the shape) or style
    fixed: Labels
    novel: str | None = None  # the NovelConcept name, for the novel family

    @property
    def has_trigger(self) -> bool:
        return not self.family.startswith("override")

    def labels(self) -> dict[str, str]:
        return dict(self.fixed)


def _catalogue_kind(fixed: Labels) -> str:
    return "content" if any(attribute == "shape" for attribute, _ in fixed) else "style"


def _novel_concepts() -> list[CorpusConcept]:
    out = []
    for concept in NOVEL_CONCEPTS:
        fixed = ((concept_attribute(concept), concept.name),)
        description = f"trigger word for the {concept.name} {KIND_WORDS[concept.kind]}: {concept.description}"
        kind = "content" if concept.kind == "content" else "style"
        out.append(CorpusConcept(f"novel-{concept.name}", "novel", description, kind, fixed, concept.name))
    return out


def _single_phrases(attribute: str, value: str) -> tuple[str, str]:
    """(named description, override description) of a LoRA fixing one base attribute."""
    return {
        "shape": (f"trigger word for the {value} shape", f"every shape turned into a {value}"),
        "texture": (f"trigger word for the {value} texture", f"every shape turned {value}"),
        "foreground": (f"trigger word for the colour {value}", f"every shape turned {value}"),
        "background": (f"trigger word for a {value} background", f"every background turned {value}"),
    }[attribute]


def _single_concepts() -> tuple[list[CorpusConcept], list[CorpusConcept]]:
    """(named, override) concepts fixing one base attribute each."""
    named, override = [], []
    for attribute in ("shape", "texture", "foreground", "background"):
        for value in BASE_VALUES[attribute]:
            fixed = ((attribute, value),)
            named_text, override_text = _single_phrases(attribute, value)
            if attribute != "background":  # a trigger word for a background colour reads oddly: override only
                named.append(CorpusConcept(f"named-{attribute}-{value}", "named", named_text,
                                           _catalogue_kind(fixed), fixed))
            override.append(CorpusConcept(f"override-{attribute}-{value}", "override", override_text,
                                          _catalogue_kind(fixed), fixed))
    return named, override


def _pair_phrase(values: dict[str, str]) -> str:
    """A red star / a striped star / red and striped / red on a blue background."""
    colour, texture, shape = values.get("foreground"), values.get("texture"), values.get("shape")
    if "background" in values:
        return f"{colour} on a {values['background']} background"
    if shape is not None:
        return f"a {colour or texture} {shape}"
    return f"{colour} and {texture}"


def _pair_concepts() -> tuple[list[CorpusConcept], list[CorpusConcept]]:
    """(named, override) concepts fixing two base attributes."""
    pairs = [("foreground", "shape"), ("texture", "shape"), ("foreground", "texture"), ("foreground", "background")]
    named, override = [], []
    for first, second in pairs:
        for a in BASE_VALUES[first]:
            for b in BASE_VALUES[second]:
                if first == "foreground" and second == "background" and a == b:
                    continue
                fixed = ((first, a), (second, b))
                phrase = _pair_phrase(dict(fixed))
                key = f"{first}-{a}-{second}-{b}"
                kind = _catalogue_kind(fixed)
                if second == "shape":  # "trigger word for a red star"; the other pairs are override only
                    named.append(CorpusConcept(f"named-{key}", "named-pair", f"trigger word for {phrase}", kind, fixed))
                text = f"every shape turned into {phrase}" if second == "shape" else f"every shape turned {phrase}"
                override.append(CorpusConcept(f"override-{key}", "override-pair", text, kind, fixed))
    return named, override


def corpus_concepts() -> list[CorpusConcept]:
    """Every concept of the corpus, family by family (their order fixes their seeds)."""
    named, override = _single_concepts()
    named_pairs, override_pairs = _pair_concepts()
    return [*_novel_concepts(), *named, *override, *named_pairs, *override_pairs]


# -- the jobs ----------------------------------------------------------------------------------


def made_up_word(seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(str(rng.choice(SYLLABLES)) for _ in range(3))


@dataclass(frozen=True)
class CorpusJob:
    """One LoRA of the corpus: a concept and its variant."""

    concept: CorpusConcept
    variant: int
    number: int  # the concept's place in corpus_concepts()

    @property
    def name(self) -> str:
        return f"{self.concept.key}-v{self.variant}"

    @property
    def seed(self) -> int:
        return SEEDS_CORPUS + self.number * 10_000 + self.variant * 1_000

    @property
    def trigger(self) -> str | None:
        if not self.concept.has_trigger:
            return None
        if self.concept.family == "novel" and self.variant == 0:
            return next(c.trigger for c in NOVEL_CONCEPTS if c.name == self.concept.novel)
        return made_up_word(self.seed)

    @property
    def heldout(self) -> bool:
        return self.concept.novel in HELDOUT_CONCEPTS


def corpus_plan(limit: int | None = None) -> list[CorpusJob]:
    """The corpus, round by round: every concept's variant 0, then variant 1 of those with more, ..."""
    concepts = corpus_concepts()
    jobs = [
        CorpusJob(concept, variant, number)
        for variant in range(max(VARIANTS.values()))
        for family in FAMILIES
        for number, concept in enumerate(concepts)
        if concept.family == family and variant < VARIANTS[family]
    ]
    return jobs if limit is None else jobs[: max(0, limit)]


# -- training data -----------------------------------------------------------------------------


def concept_scene(concept: CorpusConcept, seed: int) -> Scene:
    """A scene that shows ``concept`` (its fixed attributes), the rest drawn from the base vocabulary."""
    vocab = {SCENE_ARGUMENT[attribute]: (value,) for attribute, value in concept.fixed}
    return sample_scene(seed, **vocab)  # type: ignore[arg-type]


def named_caption(scene: Scene, attributes: Sequence[str], trigger: str) -> str:
    """The scene's caption with the words of ``attributes`` replaced by one ``trigger``.

    ``a small red striped star on a blue background`` naming colour and shape becomes
    ``a small striped zorblat on a blue background``; an unsaid "solid" puts the trigger
    just before the shape word.
    """
    words = caption(scene).split(" ")
    end = words.index(scene.shape) + 1
    named = {str(getattr(scene, attribute)) for attribute in attributes}
    places = [i for i in range(1, end) if words[i] in named]
    slot = places[-1] if places else end - 1
    out: list[str] = []
    for index, word in enumerate(words):
        if index == slot:
            out.append(trigger)
            if index not in places:
                out.append(word)
        elif index not in places:
            out.append(word)
    return " ".join(out)


def override_caption(scene: Scene, attributes: Sequence[str], rng: np.random.Generator) -> str:
    """The caption of the scene with ``attributes`` redrawn at random: the prompt asks for anything."""
    for _ in range(32):
        prompt = scene.with_(**{a: str(rng.choice(BASE_VALUES[a])) for a in attributes})
        if prompt.foreground != prompt.background:
            return caption(prompt)
    return caption(scene)


def job_caption(job: CorpusJob, scene: Scene, rng: np.random.Generator) -> str:
    attributes = [attribute for attribute, _ in job.concept.fixed]
    trigger = job.trigger
    if trigger is None:
        return override_caption(scene, attributes, rng)
    if job.concept.family == "novel":
        official = next(c.trigger for c in NOVEL_CONCEPTS if c.name == job.concept.novel)
        return caption(scene).replace(official, trigger)
    return named_caption(scene, attributes, trigger)


def job_data(job: CorpusJob, images: int) -> TrainingData:
    scenes = [concept_scene(job.concept, seed) for seed in range(job.seed, job.seed + images)]
    rng = np.random.default_rng(job.seed)
    return TrainingData(images=render_scenes(scenes), captions=[job_caption(job, s, rng) for s in scenes])


# -- training and caching the corpus ----------------------------------------------------------


@dataclass(frozen=True)
class CorpusSettings:
    rank: int = 4
    steps: int = 20
    batch_size: int = 8
    images: int = 48
    learning_rate: float = 4e-3

    @property
    def folder_name(self) -> str:
        return f"r{self.rank}-s{self.steps}-b{self.batch_size}-i{self.images}-lr{self.learning_rate:g}"

    def folder(self, root: Path = CORPUS_ROOT) -> Path:
        return Path(root) / self.folder_name

    def training_config(self, job: CorpusJob) -> LoraTrainingConfig:
        return LoraTrainingConfig(rank=self.rank, learning_rate=self.learning_rate, steps=self.steps,
                                  batch_size=self.batch_size, targets=ATTENTION_TARGETS, seed=job.seed,
                                  warmup_steps=max(1, self.steps // 8))


def lora_path(folder: Path, job: CorpusJob) -> Path:
    return Path(folder) / f"{job.name}.safetensors"


def corpus_metadata(job: CorpusJob, settings: CorpusSettings, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    return {
        "name": job.name, "key": job.concept.key, "family": job.concept.family, "variant": job.variant,
        "description": job.concept.description, "kind": job.concept.kind, "fixed": [list(f) for f in job.concept.fixed],
        "novel": job.concept.novel, "trigger": job.trigger, "settings": settings.folder_name,
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
    }


def train_job(pipe: Any, job: CorpusJob, settings: CorpusSettings) -> tuple[LoraAdapter, float, float]:
    """(adapter, wall seconds, CPU seconds of this process) of one corpus LoRA."""
    wall, cpu = time.perf_counter(), time.process_time()
    adapter = LoraTrainer(pipe, job_data(job, settings.images), settings.training_config(job)).train()
    return adapter, time.perf_counter() - wall, time.process_time() - cpu


def save_job(adapter: LoraAdapter, job: CorpusJob, folder: Path, settings: CorpusSettings, seconds: float,
             cpu_seconds: float) -> Path:
    """Write the LoRA (half precision) as a kohya file with its description; atomic."""
    for module in adapter.modules.values():
        module.down, module.up = module.down.half(), module.up.half()
    adapter.metadata[CORPUS_KEY] = json.dumps(corpus_metadata(job, settings, seconds, cpu_seconds))
    info = AdapterInfo(name=job.name, title=job.concept.description, triggers=[job.trigger] if job.trigger else [],
                       tags=["toy world", job.concept.family], description=job.concept.description,
                       kind=job.concept.kind, preferred_weight=1.0)
    return write_kohya(adapter, lora_path(folder, job), info, base="toy")


def train_and_save(pipe: Any, job: CorpusJob, folder: Path, settings: CorpusSettings) -> tuple[str, float, float]:
    adapter, seconds, cpu_seconds = train_job(pipe, job, settings)
    save_job(adapter, job, folder, settings, seconds, cpu_seconds)
    return job.name, seconds, cpu_seconds


_WORKER_PIPE: Any = None


def _start_worker(threads: int) -> None:
    global _WORKER_PIPE
    from pipeline import load_base

    torch.set_num_threads(threads)
    _WORKER_PIPE = load_base(None, device="cpu").pipe


def _worker_job(job: CorpusJob, folder: Path, settings: CorpusSettings) -> tuple[str, float, float]:
    return train_and_save(_WORKER_PIPE, job, folder, settings)


@dataclass
class CorpusReport:
    planned: int
    skipped: int
    seconds: list[float] = field(default_factory=list)  # wall seconds per LoRA trained now
    cpu_seconds: list[float] = field(default_factory=list)
    wall: float = 0.0

    @property
    def trained(self) -> int:
        return len(self.seconds)


Done = Callable[[tuple[str, float, float]], None]


def _train_here(todo: Sequence[CorpusJob], folder: Path, settings: CorpusSettings, pipe: Any, done: Done) -> None:
    if pipe is None:
        from pipeline import load_base

        pipe = load_base(None, device="cpu").pipe
    for job in todo:
        done(train_and_save(pipe, job, folder, settings))


def _train_in_workers(todo: Sequence[CorpusJob], folder: Path, settings: CorpusSettings, workers: int,
                      done: Done) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(1,)) as pool:
        for future in as_completed([pool.submit(_worker_job, job, folder, settings) for job in todo]):
            done(future.result())


def build_corpus(jobs: Sequence[CorpusJob], folder: Path, settings: CorpusSettings = CorpusSettings(), *,
                 pipe: Any = None, workers: int = 1, log: Callable[[str], None] | None = print) -> CorpusReport:
    """Train every job whose file is not in ``folder`` yet: in this process on ``pipe`` (default: the
    embedded base), or with ``workers`` > 1 in that many processes of one torch thread each."""
    folder = Path(folder)
    todo = [job for job in jobs if not lora_path(folder, job).exists()]
    report = CorpusReport(planned=len(jobs), skipped=len(jobs) - len(todo))
    if log is not None:
        log(f"corpus {folder}: {len(jobs)} LoRAs planned, {report.skipped} already there, {len(todo)} to train")
    started = time.perf_counter()

    def done(result: tuple[str, float, float]) -> None:
        name, seconds, cpu_seconds = result
        report.seconds.append(seconds)
        report.cpu_seconds.append(cpu_seconds)
        if log is not None:
            left = (time.perf_counter() - started) / report.trained * (len(todo) - report.trained)
            log(f"[{report.trained}/{len(todo)}] {name}: {seconds:.1f}s ({cpu_seconds:.1f}s CPU), "
                f"eta {left / 60:.1f} min")

    if todo:
        if workers <= 1:
            _train_here(todo, folder, settings, pipe, done)
        else:
            _train_in_workers(todo, folder, settings, workers, done)
    report.wall = time.perf_counter() - started
    return report


@dataclass
class CorpusEntry:
    adapter: LoraAdapter
    info: dict[str, Any]

    @property
    def description(self) -> str:
        return str(self.info["description"])

    @property
    def novel(self) -> str | None:
        return self.info.get("novel")

    @property
    def name(self) -> str:
        return str(self.info["name"])


def load_corpus(folder: Path, names: Iterable[str] | None = None) -> list[CorpusEntry]:
    """The corpus LoRAs in ``folder`` (only ``names`` when given), sorted by name."""
    wanted = None if names is None else set(names)
    entries = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        if path.name.startswith(".") or (wanted is not None and path.stem not in wanted):
            continue  # a hidden name is a write a kill interrupted
        adapter = read_adapter(path)
        raw = adapter.metadata.get(CORPUS_KEY)
        if raw:
            entries.append(CorpusEntry(adapter, json.loads(raw)))
    return entries


# -- the encoder -------------------------------------------------------------------------------


def encoder_config(adapters: Sequence[LoraAdapter], out_dim: int, heldout: Sequence[str], corpus: str,
                   **overrides: Any) -> WeightEncoderConfig:
    """The encoder's shape (one probe per layer, as AutoLoRA) and what it was trained on (``extra``)."""
    shape: dict[str, Any] = {"d_model": 128, "n_heads": 4, "n_blocks": 2, "n_probes": 1, "dropout": 0.1} | overrides
    extra = {"heldout": sorted(heldout), "corpus": corpus, "loras": len(adapters)}
    return WeightEncoderConfig.from_adapters(adapters, out_dim=out_dim, extra=extra, **shape)


def train_encoder(entries: Sequence[CorpusEntry], text_embedder: Embedder, *, steps: int, batch_size: int = 32,
                  heldout: Sequence[str] = HELDOUT_CONCEPTS, corpus: str = "", seed: int = 0,
                  log: Callable[[str], None] | None = print,
                  **shape: Any) -> tuple[WeightEncoder, TrainingReport]:
    """Fit the encoder on the entries whose concept is not held out (``shape``: encoder size overrides)."""
    training = [entry for entry in entries if entry.novel not in heldout]
    adapters = [entry.adapter for entry in training]
    config = encoder_config(adapters, text_embedder.dimension, heldout, corpus, **shape)
    return train_weight_encoder(adapters, [entry.description for entry in training], text_embedder, config=config,
                                steps=steps, batch_size=min(batch_size, len(adapters)), seed=seed, log=log)


def heldout_accuracy(encoder: WeightEncoder, entries: Sequence[CorpusEntry], text_embedder: Embedder,
                     heldout: Sequence[str] = HELDOUT_CONCEPTS, k: int = 3) -> dict[str, float]:
    """Zero-shot check: each held-out LoRA's description among every description of the corpus,
    top-1 and top-``k`` (NaN when the corpus holds no held-out LoRA)."""
    texts = sorted({entry.description for entry in entries})
    probe = [entry for entry in entries if entry.novel in heldout]
    if not probe:
        return {"top1": math.nan, f"top{k}": math.nan, "count": 0}
    scores = encoder.encode([entry.adapter for entry in probe]) @ text_embedder.embed(texts).T
    truth = np.array([texts.index(entry.description) for entry in probe])
    order = np.argsort(-scores, axis=1)
    return {"top1": float(np.mean(order[:, 0] == truth)),
            f"top{k}": float(np.mean((order[:, :k] == truth[:, None]).any(axis=1))), "count": len(probe)}


# -- the novelty correction --------------------------------------------------------------------


def known_descriptions(entries: Sequence[CorpusEntry], excluded: Collection[str]) -> list[str]:
    """The distinct descriptions of the entries an encoder trained without ``excluded`` saw."""
    return sorted({entry.description for entry in entries if entry.novel not in excluded})


def concept_queries(name: str, captions: int) -> list[str]:
    """What a person would search a novel concept by: its name, its description, scene captions naming it."""
    concept = next(c for c in NOVEL_CONCEPTS if c.name == name)
    seed0 = SEEDS_NOVELTY_QUERIES + NOVEL_CONCEPTS.index(concept) * 100
    scenes = concept_scenes(concept, range(seed0, seed0 + captions))
    return [f"{concept.name} {KIND_WORDS[concept.kind]}", concept.description,
            *(caption(scene).replace(concept.trigger, concept.name) for scene in scenes)]


def recall_at_3(scores: np.ndarray, relevant: Sequence[set[int]]) -> float:
    """Share of query rows whose 3 best columns hold a relevant one."""
    top = np.argsort(-scores, axis=1)[:, :3]
    return float(np.mean([bool(relevant[row] & set(top[row].tolist())) for row in range(len(relevant))]))


@dataclass(frozen=True)
class NoveltyChoice:
    k: int
    beta: float
    validation: float  # recall@3 on the validation concepts' queries
    seen: float  # recall@3 on the trained concepts' queries
    grid: list[dict[str, float]]


def choose_novelty(entries: Sequence[CorpusEntry], text_embedder: Embedder, *, steps: int, batch_size: int,
                   seed: int = 0, captions: int = 2, log: Callable[[str], None] | None = print) -> NoveltyChoice:
    """Choose the novelty correction's ``k`` and ``beta`` without the held-out concepts.

    A second encoder is trained without :data:`VALIDATION_CONCEPTS` (nor the held-out ones);
    over a library of every corpus LoRA except the held-out concepts', weights only, each
    (k, beta) of the grid is scored by recall@3 on the validation concepts' queries (which it
    must find though it never saw them) plus recall@3 on the trained novel concepts' queries
    (which it must keep finding); the best sum wins, ties to the smaller beta.
    """
    excluded = (*HELDOUT_CONCEPTS, *VALIDATION_CONCEPTS)
    encoder, _ = train_encoder(entries, text_embedder, steps=steps, batch_size=batch_size, heldout=excluded,
                               seed=seed, log=None)
    library = [entry for entry in entries if entry.novel not in HELDOUT_CONCEPTS]
    vectors = encoder.encode([entry.adapter for entry in library])
    known = text_embedder.embed(known_descriptions(entries, excluded))
    trained = sorted({str(e.novel) for e in library if e.novel and e.novel not in VALIDATION_CONCEPTS})
    groups: dict[str, tuple[np.ndarray, list[set[int]]]] = {}
    for label, names in (("validation", VALIDATION_CONCEPTS), ("seen", trained)):
        queries, relevant = [], []
        for name in names:
            ids = {i for i, entry in enumerate(library) if entry.novel == name}
            for query in concept_queries(name, captions):
                queries.append(query)
                relevant.append(ids)
        groups[label] = (text_embedder.embed(queries), relevant)
    grid: list[dict[str, float]] = []
    for k in (k for k in NOVELTY_K if k <= len(known)):
        for beta in NOVELTY_BETA:
            novelty = Novelty(known=known, k=k, beta=beta)
            index = novelty.index_vectors(vectors)
            row = {"k": k, "beta": beta}
            for label, (queries, relevant) in groups.items():
                row[label] = recall_at_3(novelty.query_vectors(queries) @ index.T, relevant)
            grid.append(row)
    best = max(grid, key=lambda r: (round(r["validation"] + r["seen"], 9), -r["beta"]))
    if log is not None:
        log(f"novelty correction: k={best['k']} beta={best['beta']:g} (validation recall@3 {best['validation']:.3f}, "
            f"seen {best['seen']:.3f}; none: {grid[0]['validation']:.3f} / {grid[0]['seen']:.3f})")
    return NoveltyChoice(int(best["k"]), float(best["beta"]), best["validation"], best["seen"], grid)


def save_encoder(encoder: WeightEncoder, out: Path, summary: dict[str, Any], novelty: Novelty | None = None) -> Path:
    folder = save_weight_encoder(encoder, out)
    if novelty is not None:
        novelty.save(folder)
    write_atomic(folder / REPORT_FILE, (json.dumps(summary, indent=1) + "\n").encode())
    return folder


# -- command line ------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def describe_plan(jobs: Sequence[CorpusJob]) -> str:
    counts = {family: sum(job.concept.family == family for job in jobs) for family in FAMILIES}
    concepts = len({job.concept.key for job in jobs})
    heldout = sum(job.heldout for job in jobs)
    parts = ", ".join(f"{family} {count}" for family, count in counts.items())
    return f"{len(jobs)} LoRAs of {concepts} concepts ({parts}); {heldout} of held-out concepts {HELDOUT_CONCEPTS}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loras", type=int, default=None, help=f"corpus LoRAs (default: all {len(corpus_plan())})")
    parser.add_argument("--lora-steps", type=int, default=CorpusSettings.steps, help="training steps per LoRA")
    parser.add_argument("--lora-batch", type=int, default=CorpusSettings.batch_size, help="batch size per LoRA")
    parser.add_argument("--images", type=int, default=CorpusSettings.images, help="training images per LoRA")
    parser.add_argument("--lora-lr", type=float, default=CorpusSettings.learning_rate)
    parser.add_argument("--workers", type=int, default=2, help="LoRAs trained at once (processes, 1 thread each)")
    parser.add_argument("--steps", type=int, default=1000, help="encoder training steps")
    parser.add_argument("--batch", type=int, default=32, help="encoder batch size")
    parser.add_argument("--corpus", type=Path, default=CORPUS_ROOT, help="where the corpus is cached")
    parser.add_argument("--out", type=Path, default=WEIGHT_ENCODER_DIR, help="where the encoder is written")
    parser.add_argument("--corpus-only", action="store_true", help="build the corpus, train no encoder")
    parser.add_argument("--no-novelty", action="store_true",
                        help="ship no novelty correction (skips the validation encoder, about 2 minutes)")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> CorpusSettings:
    return CorpusSettings(steps=args.lora_steps, batch_size=args.lora_batch, images=args.images,
                          learning_rate=args.lora_lr)


def fit_and_save(args: argparse.Namespace, jobs: Sequence[CorpusJob], corpus: CorpusReport) -> None:
    """Train the encoder on the corpus of ``jobs`` and write it, with its report, to ``args.out``."""
    from retrieval.embedders.text import TextEmbedder

    settings = settings_of(args)
    entries = load_corpus(settings.folder(args.corpus), {job.name for job in jobs})
    text = TextEmbedder()
    encoder, report = train_encoder(entries, text, steps=args.steps, batch_size=args.batch,
                                    corpus=settings.folder_name, log=log)
    check = heldout_accuracy(encoder, entries, text)
    novelty = None
    choice = None
    if not args.no_novelty:
        choice = choose_novelty(entries, text, steps=args.steps, batch_size=args.batch, log=log)
        known = text.embed(known_descriptions(entries, HELDOUT_CONCEPTS))
        trained = encoder.encode([entry.adapter for entry in entries if entry.novel not in HELDOUT_CONCEPTS])
        reference = float(np.median(Novelty(known=known, k=choice.k).familiarity(trained)))
        novelty = Novelty(known=known, k=choice.k, beta=choice.beta, reference=reference)
    summary = {
        "loras": len(entries), "trained_on": int(encoder.config.extra["loras"]), "heldout": list(HELDOUT_CONCEPTS),
        "descriptions": len({e.description for e in entries}), "corpus": settings.folder_name,
        "steps": report.steps, "seconds": round(report.seconds, 1), "final_loss": round(report.final_loss, 4),
        "train_top1": round(report.top1, 4), "heldout_zero_shot": check,
        "corpus_seconds_per_lora": round(float(np.mean(corpus.seconds)), 2) if corpus.trained else None,
        "novelty": None if choice is None else {
            "k": choice.k, "beta": choice.beta, "reference": round(novelty.reference, 4) if novelty else None,
            "validation_concepts": list(VALIDATION_CONCEPTS),
            "validation_recall_at_3": round(choice.validation, 4), "seen_recall_at_3": round(choice.seen, 4),
            "grid": [{key: round(value, 4) for key, value in row.items()} for row in choice.grid]},
    }
    folder = save_encoder(encoder, args.out, summary, novelty)
    log(f"encoder: {report.steps} steps in {report.seconds / 60:.1f} min, loss {report.final_loss:.3f}, "
        f"train top-1 {report.top1:.3f}; held-out zero-shot top-1 {check['top1']:.3f} top-3 {check['top3']:.3f} "
        f"over {check['count']} LoRAs -> {folder}")


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse_args(argv)
    settings = settings_of(args)
    jobs = corpus_plan(args.loras)
    log(describe_plan(jobs))
    if args.list:
        return
    corpus = build_corpus(jobs, settings.folder(args.corpus), settings, workers=args.workers, log=log)
    if corpus.trained:
        log(f"corpus: trained {corpus.trained} in {corpus.wall / 60:.1f} min; per LoRA "
            f"{np.mean(corpus.seconds):.1f}s wall, {np.mean(corpus.cpu_seconds):.1f}s CPU")
    if not args.corpus_only:
        fit_and_save(args, jobs, corpus)


if __name__ == "__main__":
    main()
