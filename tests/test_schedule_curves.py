"""Choosing the gated schedule's role curves (training/schedule_curves.py) with the judge."""

import pytest

from fusion.methods.gated import DEFAULT_CURVES
from fusion.schedule import as_schedule
from toyworld.concepts import COMPOSITION_HELDOUT
from training import schedule_curves as sc


def test_every_candidate_parses_and_the_shipped_default_is_one_of_them() -> None:
    names = [c.name for c in sc.CANDIDATES]
    assert len(set(names)) == len(names)
    for candidate in sc.CANDIDATES:
        options = candidate.options
        assert options["content_curve"](0.0) > 0 and options["style_curve"](1.0) > 0
    shipped = {role: as_schedule(DEFAULT_CURVES[role]).to_text() for role in ("content", "style")}
    assert any(c.options["content_curve"].to_text() == shipped["content"]
               and c.options["style_curve"].to_text() == shipped["style"] for c in sc.CANDIDATES)


def test_tuning_scores_the_chosen_candidates_on_training_pairs_only(capsys) -> None:
    summary = sc.main(["--max-pairs", "2", "--seeds", "1", "--only", "style-early", "style-late"])
    assert [c["name"] for c in summary["candidates"]] == ["style-early", "style-late"]
    assert summary["chosen"]["name"] in ("style-early", "style-late")
    assert len(summary["pairs"]) == 2
    assert not any(concept in COMPOSITION_HELDOUT for pair in summary["pairs"] for concept in pair.split("+"))
    assert all(0.0 <= c["both"] <= 1.0 for c in summary["candidates"])
    assert "<- chosen" in capsys.readouterr().out


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        sc.parse_args(["--seeds", "0"])
    with pytest.raises(SystemExit):
        sc.parse_args(["--only", "no-such-curve"])
