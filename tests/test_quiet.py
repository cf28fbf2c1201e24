"""`medley` prints its own lines only: library load reports, warnings and short progress bars are muted
unless --verbose; each command imports only what it needs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from app import cli
from library import quiet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def follow_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    quiet.set_verbose(None)
    yield
    quiet.set_verbose(None)


def _medley(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", quiet.VERBOSE_ENV)}
    env |= {"MEDLEY_HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": ""}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_quiet_loading_mutes_and_restores_the_libraries_switches() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    modules = (transformers_logging, diffusers_logging)
    before = [(m.get_verbosity(), m.is_progress_bar_enabled()) for m in modules]
    with quiet.quiet_loading():
        assert all(m.get_verbosity() == m.ERROR and not m.is_progress_bar_enabled() for m in modules)
    assert [(m.get_verbosity(), m.is_progress_bar_enabled()) for m in modules] == before
    with pytest.raises(ValueError, match="torch"):
        with quiet.quiet_loading(("torch",)):
            pass
    quiet.set_verbose(True)
    with quiet.quiet_loading():
        assert [(m.get_verbosity(), m.is_progress_bar_enabled()) for m in modules] == before


def test_verbose_follows_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not quiet.is_verbose()
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    assert quiet.is_verbose()
    quiet.set_verbose(False)
    assert not quiet.is_verbose()


def test_the_torch_dtype_deprecation_is_filtered_by_message_and_category() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.filter_known_warnings()
        warnings.warn("`torch_dtype` is deprecated and will be removed in version 1.0.0.", FutureWarning, stacklevel=1)
        warnings.warn("`torch_dtype` is deprecated", DeprecationWarning, stacklevel=1)  # another category shows
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["`torch_dtype` is deprecated", "something else is deprecated"]


def test_the_filters_hold_for_one_block_only() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet.known_warnings_muted():
            warnings.warn("`torch_dtype` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("`torch_dtype` is deprecated", FutureWarning, stacklevel=1)
        quiet.set_verbose(True)
        with quiet.known_warnings_muted():
            warnings.warn("`torch_dtype` is deprecated", FutureWarning, stacklevel=1)
    assert len(caught) == 2


def test_a_command_builds_only_its_own_parser() -> None:
    assert cli.command_named(["--verbose", "library", "list"]) == "library"
    assert cli.command_named(["--help"]) is None and cli.command_named(["generat"]) is None
    parser = cli.build_parser("library")
    commands = next(a for a in parser._actions if a.dest == "==SUPPRESS==" and hasattr(a, "choices")
                    and isinstance(a.choices, dict))
    assert list(commands.choices) == ["library"]
    full = cli.build_parser()
    names = next(a for a in full._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices
    assert set(names) == {name for name, *_ in cli.COMMANDS}


def test_generate_prints_only_its_own_line_and_verbose_shows_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    done = _medley("generate", "a red circle on a blue background", "--steps", "2", "--out", str(out),
                   home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [line for line in done.stdout.splitlines() if line.startswith(str(out))]
    loud = _medley("--verbose", "generate", "a red circle on a blue background", "--steps", "2", "--out",
                   str(out), home=tmp_path / "home")
    assert loud.returncode == 0 and loud.stderr.strip()  # the libraries' own reports


def test_library_list_and_search_print_nothing_from_libraries(tmp_path: Path) -> None:
    home = tmp_path / "home"
    listed = _medley("library", "list", home=home)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert listed.stdout.splitlines()[0].split()[:2] == ["NAME", "BASE"]
    found = _medley("search", "a red circle", home=home)
    assert found.returncode == 0 and found.stderr == "", found.stderr
    assert "adapter" in found.stdout.splitlines()[0]


HEAVY = ("gradio", "open_clip", "faiss", "retrieval", "sentence_transformers")


def _modules_after(args: list[str], home: Path) -> tuple[set[str], str]:
    """The heavy packages a fresh process has imported once `medley ARGS` returns (and that command's stdout)."""
    code = ("import sys\nfrom app.cli import main\ncode = main(sys.argv[1:])\n"
            f"print('MODULES', sorted(m for m in {HEAVY!r} if m in sys.modules))\nraise SystemExit(code)\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", quiet.VERBOSE_ENV)}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env | {"MEDLEY_HOME": str(home), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    return set(ast.literal_eval(line.removeprefix("MODULES "))), done.stdout


def test_each_command_imports_only_what_it_uses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _modules_after(["library", "list"], home)[0] == set()
    first_search, _ = _modules_after(["search", "a red circle"], home)  # builds the index: tags previews with CLIP
    assert "gradio" not in first_search and "sentence_transformers" not in first_search
    later_search, _ = _modules_after(["search", "a blue square"], home)  # tags cached: no CLIP, no torch models
    assert later_search == {"faiss", "retrieval"}
    out = tmp_path / "x.png"
    generated, _ = _modules_after(["generate", "a red circle", "--steps", "1", "--out", str(out)], home)
    assert generated == set() and out.is_file()
