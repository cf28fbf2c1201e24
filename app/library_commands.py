"""`medley library ...`: scan, import, list, show, edit, remove. Parsing and printing only."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from library.records import BASES, KINDS, AdapterRecord

if TYPE_CHECKING:
    from library.catalog import Catalog

Handler = Callable[[argparse.Namespace], int]


def _fail(message: object) -> int:
    print(f"medley: {message}", file=sys.stderr)
    return 2


def _guarded(handler: Handler) -> Handler:
    """Library errors become one line on stderr and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        from library.errors import LibraryError

        try:
            return handler(args)
        except (LibraryError, OSError) as error:
            return _fail(error)

    return run


def _open_catalog() -> Catalog:
    from library.catalog import Catalog  # imported here so that `medley --help` stays fast

    return Catalog()


def _summary(record: AdapterRecord) -> dict[str, Any]:
    entry = record.to_dict()
    entry["modules"] = len(entry.pop("targets"))
    return entry


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def _run_scan(args: argparse.Namespace) -> int:
    with _open_catalog() as catalog:
        report = catalog.scan(args.folder, progress=not args.json and sys.stderr.isatty())
    if args.json:
        _print_json({"folder": report.folder, "added": report.added, "updated": report.updated,
                     "removed": report.removed, "unchanged": report.unchanged,
                     "duplicates": [{"path": path, "name": name} for path, name in report.duplicates],
                     "problems": [{"path": p.path, "message": p.message} for p in report.problems],
                     "seconds": round(report.seconds, 3)})
    else:
        print(f"{report.folder}: {len(report.added)} added, {len(report.updated)} updated, "
              f"{report.unchanged} unchanged, {len(report.removed)} removed, {len(report.duplicates)} duplicates, "
              f"{len(report.problems)} refused ({report.seconds:.2f}s)")
        _print_refusals(report.folder, report.problems)
    for problem in report.problems:
        print(f"medley: skipped {problem.message}", file=sys.stderr)
    return 0


def _print_refusals(folder: str, problems: list[Any]) -> None:
    from library.refusals import refusal_rows

    rows = refusal_rows(folder, problems)
    if not rows:
        return
    width = min(max(len(path) for path, _ in rows), 60)
    print(f"refused ({len(rows)}):")
    print(f"  {'FILE':<{width}}  REASON")
    for path, reason in rows:
        print(f"  {path:<{width}}  {reason}")


def _run_import(args: argparse.Namespace) -> int:
    with _open_catalog() as catalog:
        record = catalog.import_file(args.file, kind=args.kind, name=args.name)
    if args.json:
        _print_json(record.to_dict())
    else:
        print(f"imported {record.name} ({record.base}, {record.family}, {record.format}, rank {record.rank}) -> "
              f"{record.path}")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    with _open_catalog() as catalog:
        records = catalog.list(base=args.base, kind=args.kind)
    if args.json:
        _print_json([_summary(record) for record in records])
        return 0
    if not records:
        print("the library is empty; add adapters with `medley library scan DIR` or `medley library import FILE`")
        return 0
    width = max(len(record.name) for record in records)
    print(f"{'NAME':<{width}}  {'BASE':<7}  {'KIND':<7}  {'FAMILY':<10}  {'RANK':>4}  {'FORMAT':<17}  TRIGGERS")
    for record in records:
        print(f"{record.name:<{width}}  {record.base:<7}  {record.kind:<7}  {record.family:<10}  {record.rank:>4}  "
              f"{record.format:<17}  {', '.join(record.triggers)}")
    return 0


def _print_record(record: AdapterRecord) -> None:
    for key, value in record.to_dict().items():
        if key == "targets":
            print(f"{'modules':>16}: {len(value)}")
        elif isinstance(value, list):
            print(f"{key:>16}: {', '.join(str(v) for v in value)}")
        else:
            print(f"{key:>16}: {value}")


def _run_show(args: argparse.Namespace) -> int:
    with _open_catalog() as catalog:
        record = catalog.get(args.name)
    if args.json:
        _print_json(record.to_dict())
    else:
        _print_record(record)
    return 0


def _run_edit(args: argparse.Namespace) -> int:
    with _open_catalog() as catalog:
        record = catalog.edit(args.name, triggers=args.triggers, preferred_weight=args.weight, kind=args.kind,
                              notes=args.notes, title=args.title, description=args.description)
    if args.json:
        _print_json(record.to_dict())
    else:
        _print_record(record)
    return 0


def _run_remove(args: argparse.Namespace) -> int:
    with _open_catalog() as catalog:
        record = catalog.remove(args.name)
    print(f"removed {record.name}")
    return 0


def add_library_commands(commands: argparse._SubParsersAction) -> None:
    """Register `medley library ...` on the top-level sub-command parser."""
    library = commands.add_parser("library", help="manage the adapter library (scan, import, list, show, edit, "
                                  "remove)", description="The adapter library in $MEDLEY_HOME/catalog.sqlite.")
    actions = library.add_subparsers(title="actions", metavar="ACTION")
    library.set_defaults(run=lambda _args: (library.print_help(), 1)[1])

    scan = actions.add_parser("scan", help="catalogue every LoRA under a folder, in place",
                              description="Catalogue every .safetensors LoRA under DIR where it lies. Unchanged "
                                          "files are skipped; bad files are reported and the scan carries on.")
    scan.add_argument("folder", type=Path, metavar="DIR")
    scan.add_argument("--json", action="store_true", help="print the scan report as JSON")
    scan.set_defaults(run=_guarded(_run_scan))

    importer = actions.add_parser("import", help="copy one LoRA file (and its sidecars) into the library",
                                  description="Check FILE, copy it and its sidecars into $MEDLEY_HOME/adapters and "
                                              "catalogue the copy. The original is never modified.")
    importer.add_argument("file", type=Path, metavar="FILE")
    importer.add_argument("--kind", choices=KINDS, default=None)
    importer.add_argument("--name", default=None, help="alias to use in prompts (default: from the file)")
    importer.add_argument("--json", action="store_true")
    importer.set_defaults(run=_guarded(_run_import))

    lister = actions.add_parser("list", help="list catalogued adapters")
    lister.add_argument("--base", choices=BASES, default=None)
    lister.add_argument("--kind", choices=KINDS, default=None)
    lister.add_argument("--json", action="store_true", help="print one JSON list")
    lister.set_defaults(run=_guarded(_run_list))

    show = actions.add_parser("show", help="everything known about one adapter")
    show.add_argument("name", metavar="NAME", help="name or id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_guarded(_run_show))

    edit = actions.add_parser("edit", help="set trigger words, preferred weight, kind, notes...",
                              description="Edit the user fields of an adapter; they survive rescans.")
    edit.add_argument("name", metavar="NAME", help="name or id")
    edit.add_argument("--trigger", dest="triggers", action="append", default=None, metavar="WORD",
                      help="trigger word or phrase (repeat for several; replaces the list)")
    edit.add_argument("--weight", type=float, default=None, help="preferred weight")
    edit.add_argument("--kind", choices=KINDS, default=None)
    edit.add_argument("--notes", default=None)
    edit.add_argument("--title", default=None)
    edit.add_argument("--description", default=None)
    edit.add_argument("--json", action="store_true")
    edit.set_defaults(run=_guarded(_run_edit))

    remove = actions.add_parser("remove", help="forget an adapter (deletes the file only if it was imported)")
    remove.add_argument("name", metavar="NAME", help="name or id")
    remove.set_defaults(run=_guarded(_run_remove))
