"""`medley generate`: prompts -> PNGs, with adapters picked by hand, by prompt tags or automatically."""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def _output_paths(out: Path | None, count: int, seed: int) -> list[Path]:
    if out is None:
        from library.home import outputs_dir

        stamp = time.strftime("%Y%m%d-%H%M%S")
        return [outputs_dir() / f"{stamp}-{seed}-{i}.png" for i in range(count)]
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


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
    from library.catalog import open_catalog
    from library.errors import LibraryError
    from pipeline import BaseModelError, GenerationResult, generate, load_base, save_png
    from pipeline.adapters import parse_pick, resolve_adapters
    from pipeline.grid import save_grid

    try:
        options = _fusion_options(args.fusion_option)
        picks = [parse_pick(text) for text in args.lora]
        base = load_base(args.base, device=args.device, attention=args.attention)
    except (BaseModelError, FileNotFoundError, RuntimeError, ValueError) as error:
        return _fail(error)
    wants_adapters = bool(picks or args.auto or any("<lora:" in p.lower() for p in args.prompts))
    catalog = open_catalog() if wants_adapters else None
    retriever = None
    if args.auto:
        from retrieval import Retriever

        assert catalog is not None
        retriever = Retriever(catalog.list())
    rows = []
    try:
        for prompt in args.prompts:
            if catalog is None:
                rows.append(generate(base, prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                                     guidance=args.guidance, width=args.width, height=args.height, batch=args.batch))
                continue
            # with --auto each image of a batch may use its own subset of the plan (Stylus' masks)
            plan = retriever.plan(prompt, base=base.family, batch=args.batch) if retriever else None
            images, provenance = [], []
            groups = range(args.batch) if plan is not None else [None]
            for i in groups:
                planned = plan.fusion_specs(i) if plan is not None and i is not None else []
                resolved = resolve_adapters(catalog, prompt, picks, planned, base_family=base.family,
                                            add_trigger_words=not args.no_triggers)
                result = generate(base, resolved.prompt, negative_prompt=args.negative,
                                  seed=args.seed + (i or 0), steps=args.steps, guidance=args.guidance,
                                  width=args.width, height=args.height, batch=1 if i is not None else args.batch,
                                  adapters=resolved.specs, fusion=args.fusion, fusion_options=options)
                images += result.images
                provenance += result.provenance
            rows.append(GenerationResult(images=images, provenance=provenance))
    except (LibraryError, ValueError) as error:
        return _fail(error)
    images = [image for result in rows for image in result.images]
    records = [p for result in rows for p in result.provenance]
    paths = _output_paths(args.out, len(images), args.seed)
    for image, record, path in zip(images, records, paths, strict=True):
        save_png(image, record, path)
    if args.grid is not None:
        save_grid([r.images for r in rows], args.prompts, args.grid)
    if args.json:
        for record, path in zip(records, paths, strict=True):
            print(json.dumps({"path": str(path), **record.to_dict()}))
    else:
        for record, path in zip(records, paths, strict=True):
            used = ", ".join(f"{a['alias']}:{a['weight']:g}" for a in record.adapters)
            print(f"{path}  seed {record.seed}  {record.seconds:.2f}s  {record.prompt}"
                  + (f"  [{used} via {args.fusion}]" if used else ""))
        if args.grid is not None:
            print(f"grid: {args.grid}")
    return 0
