"""The `medley` command line. It parses arguments and calls the core; no logic lives here.

Each command's module is imported only when that command runs (all of them for `medley --help` or a
mistyped command): the generate command's options come from the fusion engine, which imports torch,
and `medley library list` has no use for a second of torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from library.quiet import filter_known_warnings, set_verbose

EPILOG = "Run `medley COMMAND --help` for a command's options. State lives in $MEDLEY_HOME (default ~/.medley)."

# (command, module, the function that adds its parser), in the order `medley --help` lists them
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("generate", "app.generate_command", "add_generate_command"),
    ("search", "app.search_command", "add_search_command"),
    ("library", "app.library_commands", "add_library_commands"),
    ("serve", "app.serve_command", "add_serve_command"),
    ("train", "app.train_commands", "add_train_command"),
    ("toyworld", "app.toyworld_commands", "add_toyworld_command"),
    ("doctor", "app.doctor_command", "add_doctor_command"),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with just ``only`` (what running that one command needs)."""
    parser = argparse.ArgumentParser(
        prog="medley",
        description="Medley: find, compose and train LoRA adapters for text-to-image diffusion.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version="medley 0.1.0")
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' load reports, warnings and progress bars that Medley mutes")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, module, adder in COMMANDS:
        if only is None or only == name:
            getattr(importlib.import_module(module), adder)(commands)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, when it names one (global options take no values, so it is the first word)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if any(arg == name for name, _, _ in COMMANDS) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_named(argv))
    args = parser.parse_args(argv)
    set_verbose(True if args.verbose else None)
    filter_known_warnings()
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
