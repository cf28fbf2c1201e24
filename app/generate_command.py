"""`medley generate`: prompts -> PNGs, with adapters picked by hand, by prompt tags or automatically."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fusion.methods import FUSION_METHODS


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "generate",
        help="render images from one or more prompts",
        description="Render images from prompts. Image i of a batch uses seed SEED+i, so it can be reproduced alone. "
                    "Adapters come from <lora:NAME:W> tags in the prompt, --lora NAME:W, or --auto (retrieval).",
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
    parser.add_argument("--lora", action="append", default=[], metavar="NAME[:W]",
                        help="apply a library adapter with weight W (repeatable; A1111 forms like "
                             "NAME:te=0.5:unet=1 and NAME:0.8@0.5 work too)")
    parser.add_argument("--fusion", default="merge", choices=sorted(FUSION_METHODS),
                        help="how several adapters are composed (default merge)")
    parser.add_argument("--fusion-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the fusion method, e.g. tau=5 for switch (repeatable; values are JSON)")
    parser.add_argument("--auto", action="store_true", help="pick adapters from the library for the prompt")
    parser.add_argument("--no-triggers", action="store_true", help="do not add the adapters' trigger words")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path; with several images, -N is added before .png "
                             "(default: $MEDLEY_HOME/outputs/)")
    parser.add_argument("--grid", type=Path, default=None, help="also write a contact sheet of every image here")
    parser.add_argument("--json", action="store_true", help="print the provenance of each image as JSON")
    parser.set_defaults(run=_run_generate)


def _fusion_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--fusion-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _fail(error: BaseException) -> int:
    print(f"medley: {error}", file=sys.stderr)
    return 2


def _run_generate(args: argparse.Namespace) -> int:
    """Translate the arguments into one render request per prompt; the core does the rest."""
    from library.errors import LibraryError
    from pipeline import BaseModelError, RenderRequest, Studio, load_base, save_outcome
    from pipeline.grid import save_grid
    from pipeline.studio import parse_pick

    try:
        options = _fusion_options(args.fusion_option)
        picks = [parse_pick(text) for text in args.lora]
        base = load_base(args.base, device=args.device, attention=args.attention)
    except (BaseModelError, FileNotFoundError, RuntimeError, ValueError) as error:
        return _fail(error)
    studio = Studio(base)
    outcomes = []
    try:
        for prompt in args.prompts:
            outcomes.append(studio.render(RenderRequest(
                prompt=prompt, negative_prompt=args.negative, seed=args.seed, batch=args.batch, steps=args.steps,
                guidance=args.guidance, width=args.width, height=args.height, picks=picks, auto=args.auto,
                fusion=args.fusion, fusion_options=options, add_triggers=not args.no_triggers)))
    except (LibraryError, ValueError) as error:
        return _fail(error)
    images = [image for outcome in outcomes for image in outcome.images]
    records = [record for outcome in outcomes for record in outcome.provenance]
    if args.out is None:
        from library.home import outputs_dir

        paths = save_outcome(images, records, outputs_dir())
    else:
        paths = save_outcome(images, records, args.out.parent, out=args.out)
    if args.grid is not None:
        save_grid([outcome.images for outcome in outcomes], args.prompts, args.grid)
    notes = [note for outcome in outcomes for note in outcome.notices]
    if args.json:
        for record, path in zip(records, paths, strict=True):
            print(json.dumps({"path": str(path), **record.to_dict()}))
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return 0
    for record, path in zip(records, paths, strict=True):
        used = ", ".join(f"{a['alias']}:{a['weight']:g}" for a in record.adapters)
        print(f"{path}  seed {record.seed}  {record.seconds:.2f}s  {record.prompt}"
              + (f"  [{used} via {args.fusion}]" if used else ""))
    for note in notes:
        print(f"note: {note}")
    if args.grid is not None:
        print(f"grid: {args.grid}")
    return 0
