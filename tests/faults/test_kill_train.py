"""``kill -9`` of a real ``medley train`` on the toy base between writing a checkpoint's weights and its
step record, then ``medley train --resume``: the adapter equals the one an uninterrupted run of the same
seed writes, and nothing partial is left in MEDLEY_HOME/adapters."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from app.cli import main
from faults.processes import child, integrity, kill, leftovers, medley, run, start, wait_for_pause
from library.catalog import Catalog
from toyworld.export import export_concept

STEPS = 3
ARGS = ["--trigger", "hartok", "--steps", str(STEPS), "--checkpoint-every", "1", "--batch", "1", "--rank", "2",
        "--sample-steps", "1", "--seed", "7"]
# measured: the resumed run's tensors equal the uninterrupted run's bit for bit (max |difference| 0.0)
TOLERANCE = 0.0


def _checkpoint_step(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "checkpoint.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def _check_home(home: Path, unfinished: str) -> None:
    """The catalogue opens and is sound; the unfinished run left nothing in the adapters folder."""
    assert integrity(home / "catalog.sqlite") == "ok"
    with Catalog(home, register_starters=False) as catalog:
        assert catalog.find(unfinished) is None
        assert not leftovers(catalog.adapters_dir)
        assert not list(catalog.adapters_dir.glob(f"{unfinished}*"))
    assert not (home / "runs" / unfinished / "result.json").exists()


def test_kill_during_training_then_resume_gives_the_uninterrupted_adapter(tmp_path, monkeypatch):
    images = tmp_path / "images"
    export_concept("hartok", 4, images)
    home = tmp_path / "home"
    run_dir = home / "runs" / "killed"
    Catalog(home).close()  # the starter library registered here, so the children have no files to read

    # killed mid-run, at the worst moment: the second checkpoint's weights are in place, checkpoint.json
    # still says step 1
    pause = {"calls": ["replace"], "match": "checkpoint.safetensors", "when": "after", "nth": 2}
    process = start(child("cli", "train", "--images", str(images), "--name", "killed", *ARGS), home, pause=pause)
    wait_for_pause(process)
    kill(process)
    assert _checkpoint_step(run_dir) == 1
    _check_home(home, "killed")

    resumed = run(medley("train", "--resume", "killed", "--json"), home)
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == STEPS
    assert "resumed from step 2" in resumed.stderr
    monkeypatch.setenv("MEDLEY_HOME", str(home))  # the uninterrupted run, here (one torch process at a time)
    assert main(["train", "--images", str(images), "--name", "straight", *ARGS]) == 0

    killed = load_file(str(home / "adapters" / "killed.safetensors"))
    straight = load_file(str(home / "adapters" / "straight.safetensors"))
    assert killed.keys() == straight.keys()
    worst = max(float((killed[key].double() - straight[key].double()).abs().max()) for key in killed)
    assert worst <= TOLERANCE, worst
    assert integrity(home / "catalog.sqlite") == "ok"
    with Catalog(home, register_starters=False) as catalog:
        assert {r.name for r in catalog.list() if r.source == "trained"} == {"killed", "straight"}
        assert not leftovers(catalog.adapters_dir)
