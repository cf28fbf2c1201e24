"""Tuning the trained gate's role strengths (training/gate_strength.py) with the judge."""

import json
import shutil

import pytest

from fusion.gate import GATE_DIR, FusionGate
from toyworld.concepts import COMPOSITION_HELDOUT
from training import gate_strength as gs


def test_best_candidate_takes_both_then_the_smaller_gain() -> None:
    scores = {
        gs.Candidate(1.2, 1.2): gs.Score(0.9, 0.9, 0.80, 8),
        gs.Candidate(1.0, 1.2): gs.Score(0.9, 0.9, 0.80, 8),
        gs.Candidate(1.4, 1.0): gs.Score(1.0, 0.5, 0.50, 8),
    }
    assert gs.best_candidate(scores) == gs.Candidate(1.0, 1.2)  # a tie goes to the smaller total gain
    scores[gs.Candidate(1.4, 1.0)] = gs.Score(1.0, 1.0, 0.85, 8)
    assert gs.best_candidate(scores) == gs.Candidate(1.4, 1.0)


def test_tuning_writes_the_winner_into_the_gate_config_and_never_sees_heldout_pairs(tmp_path, capsys) -> None:
    gate_dir = tmp_path / "gate"
    shutil.copytree(GATE_DIR, gate_dir)
    gs.main(["--gate", str(gate_dir), "--max-pairs", "2", "--seeds", "1", "--content", "1", "1.3", "--style", "1"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    gate = FusionGate.load(gate_dir)
    record = gate.record["strength_tuning"]
    assert out["written"] and gate.strengths == out["chosen"] and gate.strengths["content"] in (1.0, 1.3)
    assert [(c["content"], c["style"]) for c in record["candidates"]] == [(1.0, 1.0), (1.3, 1.0)]
    assert len(record["pairs"]) == 2
    assert not any(concept in COMPOSITION_HELDOUT for pair in record["pairs"] for concept in pair.split("+"))
    assert gate.record["steps"] == FusionGate.load(GATE_DIR).record["steps"]  # the training record is kept


def test_dry_run_writes_nothing_and_bad_gains_are_refused(tmp_path, capsys) -> None:
    gate_dir = tmp_path / "gate"
    shutil.copytree(GATE_DIR, gate_dir)
    before = (gate_dir / "config.json").read_bytes()
    gs.main(["--gate", str(gate_dir), "--max-pairs", "1", "--seeds", "1", "--content", "1", "--style", "1",
             "--dry-run"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] is False
    assert (gate_dir / "config.json").read_bytes() == before
    with pytest.raises(SystemExit):
        gs.main(["--gate", str(gate_dir), "--content", "-1"])
    assert (gate_dir / "config.json").read_bytes() == before
