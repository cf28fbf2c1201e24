"""The child processes of the fault tests: ``python tests/faults/child.py TASK ARGS...``.

The tests kill these with SIGKILL. ``MEDLEY_FAULT_PAUSE`` (JSON, see :func:`install_pause`) makes one
of them stop at an exact point inside Medley's own code (just before or after a rename, a hard link
or an fsync of a matching path): it prints ``PAUSED <call> <path>`` and sleeps until it is killed.
Nothing is raised inside the process; the pause only lets the test choose where the kill lands.

Tasks:
    cli ARGV...                 app.cli.main(ARGV), exit with its status
    index DIMENSION             sync the retrieval index of MEDLEY_HOME's catalogue (hashing embedder)
    write FILE SIZE             library.files.write_atomic(FILE, SIZE zero bytes)
    web-import FILE [NAME]      MedleyServices.import_upload(FILE, NAME)
    cli-batch PLAN.json         after "ready" and a "go" line on stdin: app.cli.main of each argv
    web-batch PLAN.json         the same with MedleyServices calls (import, edit, scan)
    hostile LIST.json DIR HOME  import each listed file, one JSON line of outcome each; then scan DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _pause(call: str, path: str) -> None:
    print(f"PAUSED {call} {path}", flush=True)
    while True:
        time.sleep(3600)


def install_pause(spec: dict[str, Any]) -> None:
    """Wrap ``os.<call>`` for each call in ``spec["calls"]`` (replace, link, fsync) so that the
    ``spec.get("nth", 1)``-th call whose target path contains ``spec["match"]`` pauses the process
    ``spec["when"]`` ("before" or "after") the real call."""
    calls, match, when = spec["calls"], spec["match"], spec.get("when", "after")
    remaining = [int(spec.get("nth", 1))]

    def hit(path: str) -> bool:
        if match not in path:
            return False
        remaining[0] -= 1
        return remaining[0] == 0

    def wrap(name: str, real: Callable[..., Any], target: Callable[..., str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            path = target(*args)
            pause = hit(path)
            if pause and when == "before":
                _pause(name, path)
            result = real(*args, **kwargs)
            if pause:
                _pause(name, path)
            return result

        return wrapper

    targets: dict[str, Callable[..., str]] = {
        "replace": lambda src, dst, *_: str(dst),
        "link": lambda src, dst, *_: str(dst),
        "fsync": lambda fd: os.readlink(f"/proc/self/fd/{fd}"),
    }
    for name in calls:
        setattr(os, name, wrap(name, getattr(os, name), targets[name]))


def _wait_for_go() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def _warm_up() -> None:
    """Load what reading an adapter file needs (the layouts), so the batch runs at full speed."""
    from library.layouts.model_layout import known_layouts

    known_layouts()


def task_cli(argv: list[str]) -> int:
    from app.cli import main

    return main(argv)


def task_index(dimension: str) -> int:
    from library.catalog import Catalog
    from retrieval.embedders.hashing import HashingEmbedder
    from retrieval.refiner import describe
    from retrieval.search import Retriever

    with Catalog(register_starters=False) as catalog:
        records = catalog.list()
        home = catalog.home
    retriever = Retriever(records, embedder=HashingEmbedder(int(dimension)), home=home, describer=describe)
    print(json.dumps({"entries": len(retriever.index)}), flush=True)
    return 0


def task_write(path: str, size: str) -> int:
    """library.files.write_atomic of ``size`` zero bytes to ``path`` (as training writes its adapter)."""
    from library.files import write_atomic

    write_atomic(Path(path), bytes(int(size)))
    return 0


def task_web_import(path: str, name: str | None = None) -> int:
    from app.web.services import MedleyServices

    record = MedleyServices().import_upload(path, name=name)
    print(json.dumps({"name": record.name, "path": record.path}), flush=True)
    return 0


def task_cli_batch(plan_path: str) -> int:
    from app.cli import main

    plan = json.loads(Path(plan_path).read_text())
    _warm_up()
    _wait_for_go()
    for argv in plan:
        status = main(argv)
        if status != 0:
            print(f"failed: {argv}", file=sys.stderr, flush=True)
            return status
    return 0


def task_web_batch(plan_path: str) -> int:
    from app.web.services import MedleyServices

    plan = json.loads(Path(plan_path).read_text())
    services = MedleyServices()
    _warm_up()
    _wait_for_go()
    done: list[dict[str, Any]] = []
    for step in plan:
        if step["op"] == "import":
            record = services.import_upload(step["file"], name=step.get("name"))
            done.append({"op": "import", "file": step["file"], "name": record.name})
        elif step["op"] == "edit":
            services.edit(step["adapter"], **step["changes"])
        elif step["op"] == "scan":
            services.scan(step["folder"])
    print(json.dumps(done), flush=True)
    return 0


def task_hostile(list_path: str, folder: str, scan_home: str) -> int:
    """Import each listed file into MEDLEY_HOME's catalogue, one JSON line each: ``{"file", "outcome":
    read|refused|crash, ...}`` (a refusal says whether rows, revision and adapters folder stayed as they
    were); a file is announced on stderr before it is opened, so a crash that kills the process names it.
    Then scan ``folder`` into the catalogue of ``scan_home`` and print ``{"scan": ...}``."""
    from library.catalog import Catalog
    from library.errors import LibraryError

    files = json.loads(Path(list_path).read_text())
    with Catalog(register_starters=False) as catalog:
        for path in files:
            print(f"opening {path}", file=sys.stderr, flush=True)
            before = (len(catalog), catalog.revision, sorted(os.listdir(catalog.adapters_dir))
                      if catalog.adapters_dir.is_dir() else [])
            entry: dict[str, Any] = {"file": path}
            try:
                record = catalog.import_file(Path(path))
                entry.update(outcome="read", name=record.name, format=record.format, base=record.base)
                try:  # catalogued; its weights load, or (an embedding, say) are refused in one line
                    entry["modules"] = len(catalog.load_adapter(record.name).modules)
                except LibraryError as error:
                    entry.update(modules=0, load_error=type(error).__name__, load_message=str(error))
            except LibraryError as error:
                after = (len(catalog), catalog.revision, sorted(os.listdir(catalog.adapters_dir))
                         if catalog.adapters_dir.is_dir() else [])
                entry.update(outcome="refused", error=type(error).__name__, message=str(error),
                             unchanged=after == before)
            except BaseException as error:  # noqa: B036 - a crash (a Rust panic is a BaseException) is recorded
                if isinstance(error, KeyboardInterrupt | SystemExit):
                    raise
                entry.update(outcome="crash", error=type(error).__name__, message=str(error)[:300])
            print(json.dumps(entry), flush=True)
    with Catalog(Path(scan_home), register_starters=False) as catalog:
        report = catalog.scan(Path(folder))
    print(json.dumps({"scan": {"added": len(report.added), "duplicates": len(report.duplicates),
                               "problems": {p.path: p.message for p in report.problems}}}), flush=True)
    return 0


TASKS: dict[str, Callable[..., int]] = {
    "cli": lambda *argv: task_cli(list(argv)),
    "index": task_index,
    "write": task_write,
    "web-import": task_web_import,
    "cli-batch": task_cli_batch,
    "web-batch": task_web_batch,
    "hostile": task_hostile,
}


def main() -> int:
    spec = os.environ.get("MEDLEY_FAULT_PAUSE")
    if spec:
        install_pause(json.loads(spec))
    task, *args = sys.argv[1:]
    return TASKS[task](*args)


if __name__ == "__main__":
    raise SystemExit(main())
