"""Starter library quality, read by the judge: ``python benchmarks/starter_library.py [--json]``.

For each shipped starter LoRA (read from its file as a user's would be), render
fresh prompts with its trigger word through Medley's generate path and count the
images in which the judge finds its concept (shape for content, texture for
style, palette for palettes). A second column shows the same prompts on the bare
base, where the concept should be absent: the adapter, not the base, draws it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from library.formats.reader import read_adapter  # noqa: E402
from pipeline import load_base  # noqa: E402
from pipeline.generate import generate  # noqa: E402
from toyworld.concepts import concept_attribute  # noqa: E402
from toyworld.judge import Judge, read_labels  # noqa: E402
from toyworld.vocab import NOVEL_CONCEPTS  # noqa: E402
from training.starter_library import STARTER_DIR, adapter_name, concept_accuracy, evaluation_prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=64, help="prompts per adapter")
    parser.add_argument("--dir", type=Path, default=STARTER_DIR)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = load_base(None, device="cpu")
    judge = Judge.load()
    rows = []
    for concept in NOVEL_CONCEPTS:
        path = args.dir / f"{adapter_name(concept)}.safetensors"
        if not path.exists():
            continue
        started = time.perf_counter()
        adapter = read_adapter(path)
        accuracy = concept_accuracy(base, judge, adapter, concept, args.count)
        prompts, labels, seeds = evaluation_prompts(concept, args.count)
        bare = read_labels(judge, np.stack([np.asarray(i) for i in generate(base, prompts, seed=seeds).images]))
        attribute = concept_attribute(concept)
        without = float(np.mean([r[attribute] == e[attribute] for r, e in zip(bare, labels, strict=True)]))
        rows.append((adapter_name(concept), concept.kind, concept.trigger, accuracy, without,
                     time.perf_counter() - started))
    if not rows:
        raise SystemExit(f"no starter adapters in {args.dir}; run `python -m training.starter_library`")
    print(f"{len(rows)} starter adapters, {args.count} trigger prompts each, 20 steps")
    print(f"{'adapter':<12}{'kind':<9}{'trigger':<11}{'with LoRA':>10}{'bare base':>10}{'seconds':>9}")
    for name, kind, trigger, accuracy, without, seconds in rows:
        print(f"{name:<12}{kind:<9}{trigger:<11}{accuracy:>10.3f}{without:>10.3f}{seconds:>9.1f}")
    minimum = min(r[3] for r in rows)
    print(f"min accuracy {minimum:.3f}, mean {np.mean([r[3] for r in rows]):.3f}")
    if args.json:
        print(json.dumps({
            "per_adapter": {r[0]: round(r[3], 4) for r in rows},
            "bare_base": {r[0]: round(r[4], 4) for r in rows},
            "min_accuracy": round(minimum, 4),
            "count": args.count,
        }))


if __name__ == "__main__":
    main()
