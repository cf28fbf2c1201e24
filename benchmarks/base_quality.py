"""Base-model prompt adherence, read by the judge: ``python benchmarks/base_quality.py [--json]``.

For prompts of the base vocabulary (random shape, colours, texture, size and
position), the judge reads each sample back and we count how often it finds
what the prompt asked for. Two reference rows show the judge reads sensibly:
the same prompts' ground-truth renders (the judge's ceiling) and the samples
scored against shuffled prompts (the chance floor). Also times one image
(20 steps with guidance) as `medley generate` makes it.
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

from pipeline import generate, load_base  # noqa: E402
from toyworld.dataset import SEEDS_BENCHMARK, render_scenes  # noqa: E402
from toyworld.judge import Judge, accuracy, read_labels  # noqa: E402
from toyworld.scene import caption, sample_scene  # noqa: E402

ATTRIBUTES = ("shape", "foreground", "background", "texture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--base", default=None)
    parser.add_argument("--timing-runs", type=int, default=5)
    parser.add_argument("--grid", type=Path, default=None, help="write the first 64 samples as a grid PNG")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = load_base(args.base)
    judge = Judge.load()
    scenes = [sample_scene(SEEDS_BENCHMARK + i) for i in range(args.prompts)]
    prompts = [caption(s) for s in scenes]
    expected = [s.labels() for s in scenes]
    started = time.perf_counter()
    images = generate(base, prompts, seed=[SEEDS_BENCHMARK + i for i in range(len(prompts))], steps=args.steps,
                      guidance=args.cfg).images
    batch_seconds = (time.perf_counter() - started) / len(images)
    arrays = np.stack([np.asarray(image) for image in images])
    read = read_labels(judge, arrays)
    samples = accuracy(read, expected)
    renders = accuracy(read_labels(judge, render_scenes(scenes)), expected)
    shuffled = accuracy(read, expected[1:] + expected[:1])

    generate(base, prompts[0], seed=0, steps=args.steps, guidance=args.cfg)  # warm-up
    timings = []
    for run in range(args.timing_runs):
        started = time.perf_counter()
        generate(base, prompts[run % len(prompts)], seed=run, steps=args.steps, guidance=args.cfg)
        timings.append(time.perf_counter() - started)
    seconds = float(np.median(timings))

    if args.grid:
        from pipeline.grid import save_grid

        rows = [images[r * 8 : r * 8 + 8] for r in range(min(8, len(images) // 8))]
        save_grid(rows, [""] * len(rows), args.grid)

    cfg = base.default_guidance if args.cfg is None else args.cfg
    print(f"base: {base.name} ({base.family}), {len(prompts)} prompts, {args.steps} steps, CFG {cfg}")
    print(f"{'judge reads':<34}" + "".join(f"{a:>12}" for a in ATTRIBUTES))
    for label, scores in (
        ("base samples vs their prompt", samples),
        ("ground-truth renders (ceiling)", renders),
        ("samples vs shuffled prompts (floor)", shuffled),
    ):
        print(f"{label:<34}" + "".join(f"{scores[a]:>12.3f}" for a in ATTRIBUTES))
    print(f"seconds per image (1 image, {args.steps} steps + CFG, median of {len(timings)}): {seconds:.3f}")
    print(f"seconds per image in batches of 32: {batch_seconds:.3f}")
    if args.json:
        result = {a: round(samples[a], 4) for a in ATTRIBUTES}
        result.update(
            seconds_per_image=round(seconds, 4),
            seconds_per_image_batched=round(batch_seconds, 4),
            prompts=len(prompts),
            steps=args.steps,
            judge_on_renders={a: round(renders[a], 4) for a in ATTRIBUTES},
            judge_vs_shuffled={a: round(shuffled[a], 4) for a in ATTRIBUTES},
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
