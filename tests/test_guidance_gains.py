"""Choosing the gated method's adapter-guidance gains (training/guidance_gains.py) with the judge."""

import pytest

from toyworld.concepts import COMPOSITION_HELDOUT
from training import guidance_gains as gg
from training.composition_tuning import Score


def test_best_gains_take_both_then_the_gains_closer_to_plain() -> None:
    scores = {
        gg.Gains(0.0, 0.5): Score(0.9, 0.9, 0.80, 8),
        gg.Gains(0.25, 0.5): Score(0.9, 0.9, 0.80, 8),
        gg.Gains(1.0, 1.0): Score(0.7, 1.0, 0.70, 8),
    }
    assert gg.best_gains(scores) == gg.Gains(0.25, 0.5)  # a tie goes to the larger total gain
    scores[gg.Gains(1.0, 1.0)] = Score(0.9, 0.95, 0.85, 8)
    assert gg.best_gains(scores) == gg.Gains(1.0, 1.0)


def test_tuning_scores_every_candidate_on_training_pairs_only(capsys) -> None:
    summary = gg.main(["--max-pairs", "2", "--seeds", "1", "--content", "0", "1", "--style", "1"])
    assert [(c["content"], c["style"]) for c in summary["candidates"]] == [(0.0, 1.0), (1.0, 1.0)]
    assert summary["chosen"] in ({"content": 0.0, "style": 1.0}, {"content": 1.0, "style": 1.0})
    assert len(summary["pairs"]) == 2 and not summary["gate"]
    assert not any(concept in COMPOSITION_HELDOUT for pair in summary["pairs"] for concept in pair.split("+"))
    assert all(0.0 <= c["both"] <= 1.0 for c in summary["candidates"])
    assert "<- chosen" in capsys.readouterr().out


def test_gains_outside_0_to_1_are_refused() -> None:
    with pytest.raises(SystemExit):
        gg.parse_args(["--style", "1.5"])
    with pytest.raises(SystemExit):
        gg.parse_args(["--seeds", "0"])
