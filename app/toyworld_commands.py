"""``medley toyworld ...``: the procedural toy world from the command line (export training images)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_toyworld_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "toyworld",
        help="the toy world: list novel concepts, export training images of one",
        description="The procedural toy world behind the embedded base. Novel concepts are held out of the base "
                    "and reachable only through adapters: export images of one to try `medley train`.",
    )
    parser.set_defaults(run=lambda _args: _help(parser))
    sub = parser.add_subparsers(title="toyworld commands", metavar="COMMAND")
    export = sub.add_parser(
        "export",
        help="write training images of a novel concept (PNGs plus captions.txt)",
        description="Write COUNT images of a novel concept as PNGs plus captions.txt (one 'file<TAB>caption' "
                    "line each, captions holding the trigger word), ready for `medley train --images DIR`.",
    )
    export.add_argument("concept", metavar="CONCEPT", help="a novel concept's name or trigger word (heart, hartok...)")
    export.add_argument("--count", type=int, default=8, help="how many images (default 8)")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write (created if needed)")
    export.add_argument("--size", type=int, default=32, help="image size in pixels (default 32, the toy base's)")
    export.add_argument("--force", action="store_true", help="overwrite files of an earlier export")
    export.set_defaults(run=_run_export)
    listing = sub.add_parser("concepts", help="list the novel concepts and their trigger words")
    listing.set_defaults(run=_run_concepts)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def _run_export(args: argparse.Namespace) -> int:
    from toyworld.export import export_concept
    from toyworld.vocab import NOVEL_CONCEPTS

    try:
        result = export_concept(args.concept, args.count, args.out, size=args.size, force=args.force)
    except KeyError:
        known = ", ".join(f"{c.name} ({c.trigger})" for c in NOVEL_CONCEPTS)
        print(f"medley: no novel concept named or triggered by {args.concept!r}; one of: {known}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f"medley: {error}", file=sys.stderr)
        return 2
    concept = result.concept
    print(f"wrote {len(result.files)} images of {concept.name} ({concept.kind}, trigger {concept.trigger!r}) "
          f"to {args.out}")
    print(f"captions: {result.captions_file}")
    print(f"train with: medley train --images {args.out} --trigger {concept.trigger} --name my-{concept.name}")
    return 0


def _run_concepts(args: argparse.Namespace) -> int:
    from toyworld.vocab import NOVEL_CONCEPTS

    print(f"{'name':<12}{'trigger':<12}{'kind':<9}description")
    for concept in NOVEL_CONCEPTS:
        print(f"{concept.name:<12}{concept.trigger:<12}{concept.kind:<9}{concept.description}")
    return 0
