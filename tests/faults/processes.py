"""Starting, watching and killing the child processes of the fault tests (see child.py)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().parent / "child.py"
LIMIT = 240.0  # seconds a child may take to reach a point; only a guard against hanging for ever


def child_env(home: Path, pause: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment of a child: this checkout first on the path, MEDLEY_HOME, offline, no pause unless given."""
    env = {key: value for key, value in os.environ.items() if key != "MEDLEY_FAULT_PAUSE"}
    env["MEDLEY_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if pause is not None:
        env["MEDLEY_FAULT_PAUSE"] = json.dumps(dict(pause))
    return env


def medley(*argv: str) -> list[str]:
    """The ``medley`` command of this checkout."""
    return [sys.executable, "-m", "app.cli", *argv]


def child(task: str, *argv: str) -> list[str]:
    return [sys.executable, str(CHILD), task, *argv]


def start(command: list[str], home: Path, pause: Mapping[str, Any] | None = None, **options: Any) -> subprocess.Popen:
    """Start a child; its stdout is a pipe, its stderr goes to a temp file (never a pipe nobody reads,
    which would stall a chatty child) that :func:`error_output` reads."""
    options.setdefault("stdout", subprocess.PIPE)
    log = None
    if "stderr" not in options:
        log = options["stderr"] = tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=ROOT, env=child_env(home, pause), **options)
    process.error_log = log  # type: ignore[attr-defined]
    return process


def error_output(process: subprocess.Popen) -> str:
    """What a child started by :func:`start` wrote to stderr so far (the last 3,000 characters)."""
    log = getattr(process, "error_log", None)
    if log is None:
        return ""
    log.seek(0)
    return log.read().decode(errors="replace")[-3000:]


def run(command: list[str], home: Path, timeout: float = LIMIT) -> subprocess.CompletedProcess:
    """Run a child to the end; fail with its stderr unless it exits 0."""
    done = subprocess.run(command, cwd=ROOT, env=child_env(home), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command[2:]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, and check that it was the kill that ended the process."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the child had already exited ({process.returncode})"
    for stream in (process.stdout, process.stdin, getattr(process, "error_log", None)):
        if stream is not None:
            stream.close()


def _fail(process: subprocess.Popen, what: str) -> None:
    raise AssertionError(f"the child exited ({process.returncode}) before {what}:\n{error_output(process)}")


def wait_until(process: subprocess.Popen, condition: Callable[[], bool], what: str, every: float = 0.005) -> None:
    """Poll ``condition`` until it holds; fail if the child exits first."""
    deadline = time.monotonic() + LIMIT
    while not condition():
        if process.poll() is not None:
            _fail(process, what)
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(every)


def wait_for_pause(process: subprocess.Popen) -> str:
    """The ``PAUSED <call> <path>`` line of a child started with a pause; fails if it exits instead."""
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace").strip()
        if line.startswith("PAUSED "):
            return line
    process.wait(timeout=60)
    _fail(process, "reaching its pause")
    return ""


def terminal() -> tuple[int, int]:
    """A pty (master, slave) 100 columns wide: tqdm draws nothing on a terminal of width 0."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    return master, slave


def progress_on_terminal(process: subprocess.Popen, master: int, total: int, at_least: int) -> int:
    """Read the tqdm bar a child draws on the pty ``master`` until it shows ``at_least`` of ``total``
    files, then stop reading: the child blocks once the terminal's buffer is full (about 16 KB of bar
    redraws, a few hundred files), so it is still mid-work when it is killed. Returns the count shown."""
    pattern = re.compile(rb"(\d+)/" + str(total).encode())
    seen, buffer = 0, b""
    deadline = time.monotonic() + LIMIT
    while seen < at_least:
        assert time.monotonic() < deadline, "gave up waiting for scan progress"
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                _fail(process, f"showing {at_least}/{total}")
            continue
        try:
            buffer = (buffer + os.read(master, 4096))[-4096:]
        except OSError:  # the child closed the terminal
            _fail(process, f"showing {at_least}/{total}")
        counts = [int(found) for found in pattern.findall(buffer)]
        seen = max([seen, *counts])
    return seen


def integrity(catalog_path: Path) -> str:
    """``PRAGMA integrity_check`` of a catalogue file, opened on its own connection."""
    connection = sqlite3.connect(str(catalog_path), timeout=30)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def leftovers(folder: Path) -> list[str]:
    """Temp or hidden files in ``folder`` (what a killed writer would leave)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock")
