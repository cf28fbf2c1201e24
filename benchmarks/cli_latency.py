"""How long a newcomer waits for each `medley` command: ``python benchmarks/cli_latency.py [--runs 5] [--json]``.

Runs the installed ``medley`` entry point (the path a user takes, next to this Python unless
``--medley`` says otherwise) as a fresh process each time and times it wall-clock, start to exit:

- ``generate``: ``medley generate "a red circle on a blue background"``, the toy base, one image,
  20 steps, written to a temporary PNG;
- ``library list`` and ``search "a red circle"``;
- ``python -c pass``: the interpreter's own start, the floor under every command.

Each is the median of ``--runs`` cold processes (no Medley state kept in memory between runs; the
operating system's file cache stays warm, as it does for a user's second command). One fresh
MEDLEY_HOME is prepared once before the runs (a ``library list`` registers the starter library and
a ``search`` builds the index), so the timings do not include that one-time setup, which is printed
on its own line. Beside the wall time, the median CPU time (user + system) of each command: on a
shared machine the wall time grows with the load, the CPU time much less. Prints a table; with
``--json`` the last line is a JSON object with ``generate_s``, ``library_list_s``, ``search_s`` and
``python_s`` (wall seconds) and the same names with ``_cpu_s``. It never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PROMPT = "a red circle on a blue background"
SEARCH = "a red circle"


def find_medley(given: str | None) -> str:
    """The ``medley`` script of this Python's environment (or ``given``, or the one on PATH)."""
    if given:
        return given
    beside = Path(sys.executable).parent / "medley"
    if beside.is_file():
        return str(beside)
    found = shutil.which("medley")
    if found is None:
        raise SystemExit("no `medley` entry point: pip install -e . first (or pass --medley PATH)")
    return found


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds of the child: user + system, completed process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold processes per command (median)")
    parser.add_argument("--medley", default=None, help="the medley entry point (default: beside this Python)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the medians")
    args = parser.parse_args(argv)
    medley = find_medley(args.medley)
    with tempfile.TemporaryDirectory(prefix="medley-latency-") as tmp:
        home = Path(tmp) / "home"
        env = {key: value for key, value in os.environ.items() if key not in ("MEDLEY_VERBOSE", "PYTHONPATH")}
        env |= {"MEDLEY_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        commands: dict[str, list[str]] = {
            "generate": [medley, "generate", PROMPT, "--seed", "0", "--steps", "20", "--out", str(Path(tmp) / "x.png")],
            "library_list": [medley, "library", "list"],
            "search": [medley, "search", SEARCH],
            "python": [sys.executable, "-c", "pass"],
        }
        setup = 0.0
        for step in (commands["library_list"], commands["search"]):  # the one-time work of a new home
            seconds, _, done = timed(step, env)
            setup += seconds
            if done.returncode != 0:
                print(f"setup failed: {' '.join(step[1:])}: {done.stderr.strip()[-500:]}", file=sys.stderr)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        failures: dict[str, str] = {}
        for _ in range(args.runs):
            for name, command in commands.items():  # interleaved, so a busy moment spreads over all of them
                seconds, cpu_seconds, done = timed(command, env)
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
                if done.returncode != 0:
                    failures[name] = done.stderr.strip()[-300:]
    medians = {f"{name}_s": round(statistics.median(values), 3) for name, values in times.items()}
    medians |= {f"{name}_cpu_s": round(statistics.median(values), 3) for name, values in cpu.items()}
    print(f"medley: {medley}   runs: {args.runs} cold processes each   fresh MEDLEY_HOME setup: {setup:.2f} s "
          f"(library list + search, once)")
    print(f"{'command':<28}{'median s':>10}{'min s':>8}{'max s':>8}{'CPU s':>8}")
    labels = {"generate": f'generate "{PROMPT[:14]}..."', "library_list": "library list",
              "search": f'search "{SEARCH}"', "python": "python -c pass"}
    for name, values in times.items():
        print(f"{labels[name]:<28}{statistics.median(values):>10.2f}{min(values):>8.2f}{max(values):>8.2f}"
              f"{statistics.median(cpu[name]):>8.2f}")
    for name, message in failures.items():
        print(f"{name} failed: {message}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) at the end: {load:.2f} on {os.cpu_count()} cores")
    if args.json:
        print(json.dumps(medians))
    return medians


if __name__ == "__main__":
    main()
