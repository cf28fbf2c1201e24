"""A `medley` process's start: imports with the collector paused then frozen, sleeping OpenMP threads.
In-process calls of ``main(argv)`` (tests, the Python API) change none of it."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from app import startup
from app.cli import main


@pytest.fixture
def restore_gc():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # put what a test froze back under the collector
    if enabled:
        gc.enable()


def test_imports_uncollected_pauses_then_freezes(restore_gc: None) -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    with startup.imports_uncollected():
        assert not gc.isenabled()
        made = [[] for _ in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() >= before + len(made)


def test_inactive_changes_nothing(restore_gc: None) -> None:
    before = gc.get_freeze_count()
    with startup.imports_uncollected(active=False):
        assert gc.isenabled()
    assert gc.get_freeze_count() == before


def test_a_disabled_collector_stays_disabled(restore_gc: None) -> None:
    gc.disable()
    with startup.imports_uncollected():
        pass
    assert not gc.isenabled()


def test_preload_leaves_failures_to_the_command() -> None:
    startup.preload(["json", "no_such_module_for_medley", "library.quiet"])
    assert "library.quiet" in sys.modules and "no_such_module_for_medley" not in sys.modules


def test_bounded_spinning_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    startup.prefer_sleeping_threads()
    assert os.environ["GOMP_SPINCOUNT"] == startup.SPIN_COUNT and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    startup.prefer_sleeping_threads()
    assert os.environ["GOMP_SPINCOUNT"] == "5"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    startup.prefer_sleeping_threads()
    assert "GOMP_SPINCOUNT" not in os.environ and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_main_with_argv_leaves_the_process_alone(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                  restore_gc: None) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    before = gc.get_freeze_count()
    assert main(["library", "list", "--json"]) == 0
    capsys.readouterr()
    assert gc.isenabled() and gc.get_freeze_count() == before and "OMP_WAIT_POLICY" not in os.environ
