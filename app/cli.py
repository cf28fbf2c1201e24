"""The `medley` command line. It parses arguments and calls the core; no logic lives here.

Each command's module is imported only when that command runs (all of them for `medley --help` or a
mistyped command): the generate command's options come from the fusion engine, which imports torch,
and `medley library list` has no use for a second of torch. A process running its own command line
imports the command's heavy modules with the garbage collector paused and lets torch's threads sleep
while they wait (:mod:`app.startup`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from app.startup import imports_uncollected, prefer_sleeping_threads, preload, skip_exit_collection
from library.quiet import filter_known_warnings, set_verbose

EPILOG = "Run `medley COMMAND --help` for a command's options. State lives in $MEDLEY_HOME (default ~/.medley)."

# (command, module, the function that adds its parser, the heavy modules it imports: see app.startup),
# in the order `medley --help` lists them
COMMANDS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("generate", "app.generate_command", "add_generate_command", ("pipeline",)),
    ("search", "app.search_command", "add_search_command", ("library.catalog", "retrieval")),
    ("library", "app.library_commands", "add_library_commands", ("library.catalog",)),
    ("serve", "app.serve_command", "add_serve_command", ("app.web.services", "app.web.app")),
    ("train", "app.train_commands", "add_train_command", ("training.dreambooth_lora",)),
    ("toyworld", "app.toyworld_commands", "add_toyworld_command", ()),
    ("doctor", "app.doctor_command", "add_doctor_command", ("torch", "library.health", "retrieval.health")),
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
    for name, module, adder, _ in COMMANDS:
        if only is None or only == name:
            getattr(importlib.import_module(module), adder)(commands)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, when it names one (global options take no values, so it is the first word)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if any(arg == name for name, *_ in COMMANDS) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names (None: this process's own command line, which then ends)."""
    own_process = argv is None
    if own_process:
        prefer_sleeping_threads()  # before anything imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_named(argv)
    with imports_uncollected(active=own_process):
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if own_process and hasattr(args, "run"):
            preload(next((heavy for name, _, _, heavy in COMMANDS if name == command), ()))
    set_verbose(True if args.verbose else None)
    filter_known_warnings()
    if not hasattr(args, "run"):
        parser.print_help()
        return 1
    code = int(args.run(args))
    if own_process:
        skip_exit_collection()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
