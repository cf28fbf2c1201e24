"""The `medley` command line. It parses arguments and calls the core; no logic lives here."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from app.generate_command import add_generate_command
from app.library_commands import add_library_commands
from app.search_command import add_search_command
from app.serve_command import add_serve_command
from app.toyworld_commands import add_toyworld_command
from app.train_commands import add_train_command

EPILOG = "Run `medley COMMAND --help` for a command's options. State lives in $MEDLEY_HOME (default ~/.medley)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medley",
        description="Medley: find, compose and train LoRA adapters for text-to-image diffusion.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version="medley 0.1.0")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_generate_command(commands)
    add_search_command(commands)
    add_library_commands(commands)
    add_serve_command(commands)
    add_train_command(commands)
    add_toyworld_command(commands)
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
