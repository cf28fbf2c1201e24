"""Retrieval at catalogue scale: ``python benchmarks/retrieval_speed.py [--n 100000] [--json]``.

Builds a synthetic catalogue of ``--n`` AdapterRecords (varied subjects, styles, media, made-up
trigger words, mixed base families), indexes it with the real Retriever, and times prompt ->
plan (prompt split, MiniLM embedding of its concepts, FAISS search, scoring, composition).

Embedding 100k descriptions with MiniLM on 2 cores takes long, so only ``--unique`` template
descriptions are embedded for real; every record's vector is its template's vector plus a small
random perturbation (re-normalised). Prompts are always embedded for real. The table says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from library.records import AdapterRecord  # noqa: E402
from retrieval.embedders.base import l2_normalise  # noqa: E402
from retrieval.embedders.text import TextEmbedder  # noqa: E402
from retrieval.refiner import describe  # noqa: E402
from retrieval.search import Retriever  # noqa: E402

SUBJECTS = ("cat", "dog", "fox", "owl", "dragon", "knight", "robot", "castle", "forest", "city street", "car",
            "spaceship", "samurai", "witch", "mermaid", "flower", "mountain", "lighthouse", "train", "tiger",
            "astronaut", "wizard", "elf", "cyborg", "pirate ship", "tea cup", "bicycle", "sunflower", "whale", "bee")
STYLES = ("watercolor", "oil painting", "pixel art", "anime", "ukiyo-e", "art nouveau", "cyberpunk", "steampunk",
          "low poly", "charcoal sketch", "pastel", "neon", "film noir", "vaporwave", "stained glass", "claymation",
          "origami", "impressionist", "cubist", "gothic", "isometric", "comic book", "line art", "baroque")
ADJECTIVES = ("tiny", "giant", "ancient", "futuristic", "glowing", "rusty", "fluffy", "golden", "frozen", "burning",
              "cute", "menacing", "elegant", "wooden", "crystal", "mechanical", "floating", "sleepy")
MEDIA = ("photo", "illustration", "3d render", "poster", "sticker", "portrait", "landscape", "concept art")
BASES = ("sd1", "sd1", "sdxl", "sdxl", "toy", "unknown")
SYLLABLES = ("ka", "lo", "mi", "zu", "rek", "tan", "vo", "shi", "qua", "bri", "dol", "fen", "gar", "hix", "jup")


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3))


def synthetic_records(n: int, unique: int, seed: int = 0) -> tuple[list[AdapterRecord], list[int]]:
    """``n`` records over ``unique`` description templates; returns (records, template index of each)."""
    rng = random.Random(seed)
    templates = []
    for _ in range(unique):
        kind = rng.choice(("content", "style", "style", "other"))
        subject, style, adjective, medium = (rng.choice(SUBJECTS), rng.choice(STYLES), rng.choice(ADJECTIVES),
                                             rng.choice(MEDIA))
        if kind == "content":
            description = f"a {adjective} {subject}, {medium}"
            tags = [subject, adjective, medium]
        elif kind == "style":
            description = f"{style} style, {adjective} mood, {medium}"
            tags = [style, medium]
        else:
            description = f"{adjective} {subject} {medium} in {style}"
            tags = [subject, style]
        templates.append((kind, description, tags, subject if kind == "content" else style))
    records, template_of = [], []
    for index in range(n):
        template = index % unique
        kind, description, tags, head = templates[template]
        records.append(
            AdapterRecord(
                id=index + 1, sha256=hashlib.sha256(str(index).encode()).hexdigest(),
                name=f"{head.replace(' ', '-')}-{index}", title=f"{head.title()} {kind} #{index}",
                path=f"/loras/{index}.safetensors", format="kohya", base=rng.choice(BASES),
                rank=rng.choice((8, 16, 32)),
                triggers=[made_up_word(rng)], tags=list(tags), description=description, kind=kind,
                preferred_weight=rng.choice((0.6, 0.7, 0.8, 1.0)),
            )
        )
        template_of.append(template)
    return records, template_of


class PerturbedEmbedder:
    """The real embedder's name and prompts; records' descriptions map to template vector + noise."""

    def __init__(self, real: TextEmbedder, rows: dict[str, int], vectors: np.ndarray) -> None:
        self.real = real
        self.rows = rows
        self.vectors = vectors

    def forget(self) -> None:
        """Drop the derived vectors (they live in the index now)."""
        self.rows, self.vectors = {}, self.vectors[:0]

    @property
    def name(self) -> str:
        return self.real.name

    @property
    def dimension(self) -> int:
        return self.real.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if texts and all(text in self.rows for text in texts):
            return self.vectors[[self.rows[text] for text in texts]]
        return self.real.embed(texts)


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def random_prompt(rng: random.Random, records: Sequence[AdapterRecord]) -> str:
    parts = [f"a {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}"]
    if rng.random() < 0.6:
        parts.append(f"in the style of {rng.choice(STYLES)}")
    if rng.random() < 0.5:
        parts.append(rng.choice(MEDIA))
    if rng.random() < 0.3:
        parts.append(rng.choice(records).triggers[0])
    return ", ".join(parts)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="catalogue entries")
    parser.add_argument("--unique", type=int, default=3000, help="descriptions embedded for real")
    parser.add_argument("--noise", type=float, default=0.05, help="perturbation of the derived vectors")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--base", default="sd1")
    parser.add_argument("--hnsw-threshold", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    unique = max(1, min(args.unique, args.n))

    import faiss
    import torch

    rss_start = rss_mb()
    records, template_of = synthetic_records(args.n, unique, args.seed)
    real = TextEmbedder()
    real.embed(["warm-up"])
    rss_model = rss_mb()

    started = time.perf_counter()
    template_texts: dict[int, str] = {}
    for record, template in zip(records, template_of, strict=True):
        template_texts.setdefault(template, describe(record))
    template_vectors = real.embed([template_texts[t] for t in range(unique)])
    embed_seconds = time.perf_counter() - started

    rng = np.random.default_rng(args.seed)
    noise = rng.standard_normal((args.n, real.dimension)).astype(np.float32) * args.noise / np.sqrt(real.dimension)
    derived = l2_normalise(template_vectors[np.asarray(template_of)] + noise)
    embedder = PerturbedEmbedder(real, {describe(record): row for row, record in enumerate(records)}, derived)
    del derived, noise

    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        retriever = Retriever(records, embedder, home=home, hnsw_threshold=args.hnsw_threshold)
        build_seconds = time.perf_counter() - started
        embedder.forget()
        rss_built = rss_mb()
        started = time.perf_counter()
        reopened = Retriever(records, embedder, home=home, hnsw_threshold=args.hnsw_threshold)
        reopen_seconds = time.perf_counter() - started
        assert not reopened.last_sync.rebuilt and reopened.last_sync.embedded == 0
        index_bytes = sum(p.stat().st_size for p in (Path(home) / "index").iterdir())
        del reopened

        prompt_rng = random.Random(args.seed + 1)
        prompts = [random_prompt(prompt_rng, records) for _ in range(args.prompts)]
        for prompt in prompts[:5]:
            retriever.plan(prompt, base=args.base)
        plan_ms, search_ms, embed_ms, chosen = [], [], [], []
        for prompt in prompts:
            started = time.perf_counter()
            plan = retriever.plan(prompt, base=args.base, batch=4)
            plan_ms.append((time.perf_counter() - started) * 1000)
            chosen.append(len(plan.adapters))
            started = time.perf_counter()
            retriever.search(prompt, k=5, base=args.base)
            search_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            real.embed([c.text for c in plan.concepts] or [prompt])
            embed_ms.append((time.perf_counter() - started) * 1000)
        rss_end = rss_mb()
        kind = retriever.index.kind

    print(f"retrieval speed: {args.n} synthetic adapters, index {kind}, base filter {args.base!r}, "
          f"torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}")
    print(f"  vectors: {unique} unique descriptions embedded with {real.name}; the other "
          f"{args.n - unique} derived by perturbing them (noise {args.noise}); prompts embedded for real")
    rows = [
        ("embed unique descriptions (s)", embed_seconds),
        ("index build: describe + add + save (s)", build_seconds),
        ("reopen saved index + sync check (s)", reopen_seconds),
        ("index on disk (MB)", index_bytes / 2**20),
        ("RSS at start / with model (MB)", f"{rss_start:.0f} / {rss_model:.0f}"),
        ("RSS after build / after queries (MB)", f"{rss_built:.0f} / {rss_end:.0f}"),
        ("plan p50 / p99 (ms)", f"{percentile(plan_ms, 50):.1f} / {percentile(plan_ms, 99):.1f}"),
        ("  of which concept embedding p50 (ms)", percentile(embed_ms, 50)),
        ("search k=5 p50 / p99 (ms)", f"{percentile(search_ms, 50):.1f} / {percentile(search_ms, 99):.1f}"),
        ("adapters per plan (mean)", float(np.mean(chosen))),
    ]
    for label, value in rows:
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {label:<42}{shown:>16}")
    if args.json:
        print(json.dumps({
            "n_adapters": args.n,
            "unique_embedded": unique,
            "index_kind": kind,
            "embed_seconds": round(embed_seconds, 3),
            "build_seconds": round(build_seconds, 3),
            "reopen_seconds": round(reopen_seconds, 3),
            "plan_p50_ms": round(percentile(plan_ms, 50), 2),
            "plan_p99_ms": round(percentile(plan_ms, 99), 2),
            "search_p50_ms": round(percentile(search_ms, 50), 2),
            "embed_p50_ms": round(percentile(embed_ms, 50), 2),
            "rss_mb": round(rss_end, 1),
            "index_mb": round(index_bytes / 2**20, 2),
            "torch_threads": torch.get_num_threads(),
        }))


if __name__ == "__main__":
    main()
