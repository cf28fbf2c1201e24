"""The `medley` command line. It parses arguments and calls the core; no logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EPILOG = "Run `medley COMMAND --help` for a command's options. State lives in $MEDLEY_HOME (default ~/.medley)."


def _add_generate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "generate",
        help="render images from one or more prompts",
        description="Render images from prompts. Image i of a batch uses seed SEED+i, so it can be reproduced alone.",
    )
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="what to draw (several prompts: one row each)")
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", "--guidance", dest="guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: the base's own, 3 for the toy base)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1, help="images per prompt")
    parser.add_argument("--base", default=None, help="diffusers folder, .safetensors checkpoint or cached hub id "
                        "(default: the embedded toy base)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--attention", default="auto", choices=("auto", "xformers", "sdpa"))
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path; with several images, -N is added before .png "
                             "(default: $MEDLEY_HOME/outputs/)")
    parser.add_argument("--grid", type=Path, default=None, help="also write a contact sheet of every image here")
    parser.add_argument("--json", action="store_true", help="print the provenance of each image as JSON")
    parser.set_defaults(run=_run_generate)


def _output_paths(out: Path | None, count: int, seed: int) -> list[Path]:
    if out is None:
        from library.home import outputs_dir

        stamp = time.strftime("%Y%m%d-%H%M%S")
        return [outputs_dir() / f"{stamp}-{seed}-{i}.png" for i in range(count)]
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


def _run_generate(args: argparse.Namespace) -> int:
    from pipeline import BaseModelError, generate, load_base, save_png
    from pipeline.grid import save_grid

    try:
        base = load_base(args.base, device=args.device, attention=args.attention)
    except (BaseModelError, FileNotFoundError, RuntimeError) as error:
        print(f"medley: {error}", file=sys.stderr)
        return 2
    results = []
    try:
        for prompt in args.prompts:
            results.append(generate(base, prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                                    guidance=args.guidance, width=args.width, height=args.height, batch=args.batch))
    except ValueError as error:
        print(f"medley: {error}", file=sys.stderr)
        return 2
    images = [image for result in results for image in result.images]
    provenance = [p for result in results for p in result.provenance]
    paths = _output_paths(args.out, len(images), args.seed)
    for image, record, path in zip(images, provenance, paths, strict=True):
        save_png(image, record, path)
    if args.grid is not None:
        save_grid([r.images for r in results], args.prompts, args.grid)
    if args.json:
        for record, path in zip(provenance, paths, strict=True):
            print(json.dumps({"path": str(path), **record.to_dict()}))
    else:
        for record, path in zip(provenance, paths, strict=True):
            print(f"{path}  seed {record.seed}  {record.seconds:.2f}s  {record.prompt}")
        if args.grid is not None:
            print(f"grid: {args.grid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medley",
        description="Medley: find, compose and train LoRA adapters for text-to-image diffusion.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version="medley 0.1.0")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_generate(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
