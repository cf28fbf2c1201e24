"""DreamBooth-LoRA on the toy base, with and without CAT: ``python benchmarks/training.py [--json]``.

Exports 8 training images of a held-out novel shape (default: chevron, trigger ``vexilo``),
trains ``medley train``'s default settings on them twice, without and with the CAT loss
(same seeds), and reads the results with the judge:

- trigger accuracy: share of fresh trigger prompts whose image shows the novel shape
  (target: at least 0.9 within 5 minutes of training on 2 CPU cores);
- Knowledge Preservation (KPS): share of base-vocabulary prompts without the trigger
  (``a red circle on a blue background``) whose image still shows the requested shape with
  the adapter applied; the base alone is the reference.

Runs in a temporary MEDLEY_HOME, so the user's library is untouched. Needs the embedded
base (assets/toy-base): exits with status 2 when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pipeline.toy_base import TOY_BASE_DIR  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="chevron", help="a novel shape (name or trigger); default chevron")
    parser.add_argument("--images", type=int, default=8, help="training images to export (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: medley train's)")
    parser.add_argument("--eval-count", type=int, default=64, help="prompts per score (default 64)")
    parser.add_argument("--sample-steps", type=int, default=20, help="denoising steps of scored images")
    parser.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    args = parser.parse_args()

    if not (TOY_BASE_DIR / "unet").is_dir():
        print(f"benchmarks/training.py: the embedded toy base is missing ({TOY_BASE_DIR}); "
              "build it with `python -m training.toy_base`", file=sys.stderr)
        return 2
    from toyworld.vocab import novel_concept

    try:
        concept = novel_concept(args.concept)
    except KeyError as error:
        print(f"benchmarks/training.py: {error.args[0]}", file=sys.stderr)
        return 2
    if concept.kind != "content":
        print(f"benchmarks/training.py: {concept.name} is a {concept.kind} concept; pick a novel shape",
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="medley-bench-") as home:
        os.environ["MEDLEY_HOME"] = home
        return _run(args, concept, Path(home))


def _run(args: argparse.Namespace, concept, home: Path) -> int:  # type: ignore[no-untyped-def]
    from pipeline import load_base
    from toyworld.export import export_concept
    from toyworld.judge import Judge
    from training.dreambooth_lora import TrainArgs, TrainingEvents, start
    from training.evaluation import knowledge_preservation, trigger_accuracy
    from training.progress import ProgressPrinter

    exported = export_concept(concept.name, args.images, home / "images")
    base = load_base(None, device="cpu")
    judge = Judge.load()
    rows = []
    for cat in (False, True):
        label = "with CAT" if cat else "without CAT"
        printer = ProgressPrinter(f"{concept.trigger} {label}", every_seconds=30)
        train_args = TrainArgs(name=f"bench-{concept.name}-{'cat' if cat else 'plain'}",
                               images=str(exported.files[0].parent), trigger=concept.trigger, cat=cat,
                               class_word="shape", steps=args.steps, checkpoint_every=0)
        result = start(train_args, base=base, events=TrainingEvents(on_progress=printer,
                                                                    on_message=printer.message))
        assert result.adapter is not None
        started = time.perf_counter()
        accuracy = trigger_accuracy(base, judge, result.adapter, concept, args.eval_count, args.sample_steps)
        kps = knowledge_preservation(base, judge, result.adapter, concept, args.eval_count, args.sample_steps)
        rows.append({"label": label, "trigger_accuracy": accuracy.score, "kps": kps.score,
                     "train_seconds": result.seconds, "eval_seconds": time.perf_counter() - started,
                     "steps": result.step})
    reference = knowledge_preservation(base, judge, None, concept, args.eval_count, args.sample_steps)

    print(f"concept: {concept.name} (trigger {concept.trigger}), {args.images} training images, "
          f"{rows[0]['steps']} steps, {args.eval_count} prompts per score")
    print(f"{'run':<14}{'trigger acc':>12}{'KPS':>8}{'train s':>10}{'eval s':>9}")
    for row in rows:
        print(f"{row['label']:<14}{row['trigger_accuracy']:>12.3f}{row['kps']:>8.3f}{row['train_seconds']:>10.1f}"
              f"{row['eval_seconds']:>9.1f}")
    print(f"{'base alone':<14}{'':>12}{reference.score:>8.3f}")
    if args.json:
        plain, with_cat = rows
        print(json.dumps({
            "concept": concept.name, "images": args.images, "steps": plain["steps"],
            "trigger_accuracy": round(plain["trigger_accuracy"], 4), "train_seconds": round(plain["train_seconds"], 1),
            "trigger_accuracy_cat": round(with_cat["trigger_accuracy"], 4),
            "train_seconds_cat": round(with_cat["train_seconds"], 1),
            "kps_without_cat": round(plain["kps"], 4), "kps_with_cat": round(with_cat["kps"], 4),
            "kps_base": round(reference.score, 4), "eval_count": args.eval_count,
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
