"""Start and end a `medley` process without paying the garbage collector for the libraries' imports.

torch, diffusers and transformers create millions of objects as they import. Python's cyclic
collector walks the growing heap again and again while they do (about 0.8 s of `medley generate`
on a 2-core machine), and once more as the process exits (about 1 s after the image is written).
Nearly all of those objects live as long as the process: modules, classes, functions. So the
command's heavy modules are imported with the collector paused and then frozen into the permanent
generation (:func:`gc.freeze`), which later collections skip; the collector runs as usual for
everything the command creates afterwards, and the last collection at exit is skipped the same way.
The few cycles the paused imports leave (some kilobytes) stay until the process ends.

The same process also bounds how long OpenMP (torch's CPU threads) spins while it waits for work
(``GOMP_SPINCOUNT``), unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set already: with threads
that spin without end, one other busy process on a 2-core machine turned the toy base's 20 steps
from 0.7 s into 30-60 s (each of thousands of small parallel regions waits for a thread that has lost
its core). Measured for a cold ``medley generate`` of one image: idle machine 5.3 s bounded, 6.1 s with
sleeping threads (``OMP_WAIT_POLICY=PASSIVE``, every region wakes its threads); beside one busy torch
process 7.6 s bounded, 9.3 s sleeping. The images are the same (the thread count does not change).

Only for a process running its own command line: tests call ``app.cli.main(argv)`` many times in
one process, which must keep collecting.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Iterable, Iterator

SPIN_COUNT = "20000"  # spins before an idle OpenMP thread sleeps (libgomp's default without a policy: 300,000)


def prefer_sleeping_threads() -> None:
    """Before torch is imported: OpenMP threads spin briefly, then sleep, while they wait (``GOMP_SPINCOUNT``),
    unless the environment already says how they wait."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


@contextlib.contextmanager
def imports_uncollected(active: bool = True) -> Iterator[None]:
    """Within the block (a process's start: parsing, the command's imports) the collector is paused; after it,
    every object alive is frozen into the permanent generation. ``active=False``: nothing changes."""
    was_enabled = gc.isenabled()
    if active:
        gc.disable()
    try:
        yield
    finally:
        if active:
            if was_enabled:
                gc.enable()
            gc.freeze()


def preload(modules: Iterable[str]) -> None:
    """Import ``modules`` now; one that fails is left for the command itself to import (and report)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the command imports it again and says what is wrong
            continue


def skip_exit_collection() -> None:
    """The process is about to end: flush the output and freeze every object, so exiting does not walk them."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()
