"""``medley train``: DreamBooth-LoRA (prior preservation, CAT, Break-for-Make) from a folder of images."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """Train a LoRA from a folder of images (any size; resized and centre-cropped to the base's size).
Captions come from captions.txt or <image>.txt beside the images (the trigger word is added when missing),
or --instance-prompt. The run lives in $MEDLEY_HOME/runs/NAME and checkpoints every --checkpoint-every steps;
Ctrl-C stops at the next step with a checkpoint, and `medley train --resume NAME` continues it. The adapter
is written to $MEDLEY_HOME/adapters/NAME.safetensors (kohya format, with a preview) and added to the library."""


def add_train_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a LoRA from a folder of images (DreamBooth, CAT, B4M)",
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", metavar="DIR", help="folder of training images")
    parser.add_argument("--trigger", metavar="WORD", help="the made-up word that will call the concept up")
    parser.add_argument("--name", help="name of the run and the adapter (letters, digits, . _ -)")
    parser.add_argument("--resume", metavar="NAME", help="continue an interrupted run from its latest checkpoint")
    parser.add_argument("--instance-prompt", help="one caption for every image (must hold the trigger)")
    parser.add_argument("--class-prompt", help="prompt of the concept's class, e.g. 'a shape' (prior, CAT)")
    parser.add_argument("--class-word", help="the class noun that replaces the trigger in CAT's class captions "
                        "(default: the class prompt's last word; none: the trigger is removed)")
    parser.add_argument("--prior", action="store_true", help="prior preservation with class images from the base")
    parser.add_argument("--num-class-images", type=int, default=50, help="class images to render (default 50)")
    parser.add_argument("--prior-weight", type=float, default=1.0, help="weight of the prior loss (default 1)")
    parser.add_argument("--cat", action="store_true", help="add the CAT loss (keeps class prompts as the base draws "
                        "them)")
    parser.add_argument("--cat-weight", type=float, default=1.0, help="weight of the CAT loss (default 1)")
    parser.add_argument("--b4m", choices=("content", "style", "combined"),
                        help="Break-for-Make: train a content or style adapter in its own subspace (train both with "
                             "the same --seed), or make the combined one from two finished runs")
    parser.add_argument("--b4m-content", metavar="RUN", help="with --b4m combined: the content run")
    parser.add_argument("--b4m-style", metavar="RUN", help="with --b4m combined: the style run")
    parser.add_argument("--kind", choices=("content", "style", "other"), help="how the library files it "
                        "(default content; style for --b4m style)")
    parser.add_argument("--steps", type=int, help="training steps (default: 400 on the toy base, 500 on SD)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    parser.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank, scale 1)")
    parser.add_argument("--lr", type=float, help="learning rate (default: 2e-3 on the toy base, 1e-4 on SD)")
    parser.add_argument("--batch", type=int, help="batch size (default: 16 on the toy base, 1 on SD)")
    parser.add_argument("--targets", default="to_q,to_k,to_v,to_out.0",
                        help="comma-separated module names to adapt (default: the UNet's attention projections)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-prompt", action="append", default=[], metavar="PROMPT",
                        help="prompt rendered every --validate-every steps (repeatable; default: two captions)")
    parser.add_argument("--validate-every", type=int, default=0, metavar="N", help="render validation images "
                        "every N steps into the run folder (default 0: off)")
    parser.add_argument("--checkpoint-every", type=int, default=50, metavar="N", help="checkpoint every N steps "
                        "(default 50; 0: off)")
    parser.add_argument("--sample-steps", type=int, help="denoising steps of class/validation/preview images")
    parser.add_argument("--base", default=None, help="base model: diffusers folder, .safetensors or cached hub id "
                        "(default: the embedded toy base)")
    parser.add_argument("--tag", action="append", default=[], help="a tag for the library (repeatable)")
    parser.add_argument("--description", default="", help="description for the library")
    parser.add_argument("--force", action="store_true", help="replace an existing run or adapter of this name")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.set_defaults(run=_run_train)


def _train_args(args: argparse.Namespace) -> Any:
    from training.dreambooth_lora import TrainArgs

    return TrainArgs(
        name=args.name or "", images=args.images, trigger=args.trigger or "", instance_prompt=args.instance_prompt,
        class_prompt=args.class_prompt, class_word=args.class_word, prior=args.prior,
        num_class_images=args.num_class_images, prior_weight=args.prior_weight, cat=args.cat,
        lambda_cat=args.cat_weight, kind=args.kind, b4m=args.b4m, b4m_content=args.b4m_content,
        b4m_style=args.b4m_style, rank=args.rank, alpha=args.alpha, learning_rate=args.lr, steps=args.steps,
        batch_size=args.batch, targets=[t.strip() for t in args.targets.split(",") if t.strip()], seed=args.seed,
        validation_prompts=args.validation_prompt, validate_every=args.validate_every,
        checkpoint_every=args.checkpoint_every, sample_steps=args.sample_steps, base=args.base, tags=args.tag,
        description=args.description, force=args.force,
    )


def _missing(args: argparse.Namespace) -> str | None:
    if args.resume:
        extra = [flag for flag, value in (("--images", args.images), ("--trigger", args.trigger),
                                          ("--name", args.name)) if value]
        if extra:
            return f"--resume takes everything from the run folder; drop {', '.join(extra)}"
        return None
    wanted = [("--name", args.name)]
    if args.b4m != "combined":
        wanted += [("--images", args.images), ("--trigger", args.trigger)]
    absent = [flag for flag, value in wanted if not value]
    return f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} required (or --resume NAME)" if absent else None


def _run_train(args: argparse.Namespace) -> int:
    from library.errors import LibraryError
    from training.dreambooth_lora import TrainingEvents, resume, start
    from training.images import TrainingInputError
    from training.progress import ProgressPrinter

    problem = _missing(args)
    if problem:
        print(f"medley: {problem}", file=sys.stderr)
        return 2
    name = args.resume or args.name
    printer = ProgressPrinter(f"train {name}")
    stopping: list[bool] = []

    def interrupt(_signum: int, _frame: object) -> None:
        if stopping:
            raise KeyboardInterrupt
        stopping.append(True)
        printer.message("stopping after this step (Ctrl-C again to quit at once)")

    events = TrainingEvents(on_progress=printer, on_message=printer.message, stop=lambda: bool(stopping))
    try:
        previous = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread: Ctrl-C handling stays as it is
        previous = None
    try:
        result = resume(args.resume, events=events) if args.resume else start(_train_args(args), events=events)
    except (TrainingInputError, LibraryError, ValueError, OSError, RuntimeError) as error:  # BaseModelError: ValueError
        print(f"medley: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medley: interrupted; `medley train --resume {name}` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if not result.finished:
        print(f"medley: stopped at step {result.step}/{result.steps}; `medley train --resume {name}` continues",
              file=sys.stderr)
        return 130
    summary = {"name": result.record.name if result.record else name, "adapter": str(result.adapter_path),
               "preview": str(result.preview_path), "run": str(result.run_dir), "steps": result.step,
               "seconds": round(result.seconds, 1), "id": result.record.id if result.record else None}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"adapter: {summary['adapter']}\npreview: {summary['preview']}\nrun:     {summary['run']}")
        print(f"in the library as {summary['name']!r} (id {summary['id']}); {result.step} steps in "
              f"{result.seconds:.0f}s")
        if result.validation:
            print(f"validation images: {Path(result.validation[-1]).parent}")
    return 0
