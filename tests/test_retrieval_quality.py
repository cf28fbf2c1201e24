"""benchmarks/retrieval_quality.py: metric helpers (pure), labelled prompts, and each mode on tiny libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.retrieval_quality import (
    Labelled,
    Outcome,
    Row,
    Starters,
    TableEmbedder,
    acceptable_ids,
    both_vectors,
    distractor_jobs,
    group_recall,
    hit_at,
    json_summary,
    load_weights,
    named_prompts,
    plan_counts,
    starter_prompts,
    summarise,
    text_row,
    weight_rows,
)
from library.lora import LoraAdapter, LoraModule
from library.records import AdapterRecord
from retrieval.embedders.hashing import HashingEmbedder
from retrieval.embedders.weights import WeightEmbedder, WeightEncoder, WeightEncoderConfig
from toyworld.vocab import novel_concept
from training.weight_encoder import HELDOUT_CONCEPTS, CorpusEntry


def _outcome(ranked, planned, relevant, acceptable=(), group="caption") -> Outcome:
    return Outcome(Labelled("p", group, frozenset(relevant), frozenset(acceptable)), tuple(ranked), tuple(planned))


def test_hit_at_and_plan_counts() -> None:
    assert hit_at([5, 2, 9], {9}, 3) and not hit_at([5, 2, 9], {9}, 2) and not hit_at([], {1}, 3)
    assert plan_counts([1, 2, 3], {1, 3}) == (2, 3) and plan_counts([], {1}) == (0, 0)


def test_summarise_micro_averages_plans() -> None:
    outcomes = [
        _outcome([1, 2, 3], [1, 7], {1}, {7}),  # hit@1, plan all good
        _outcome([4, 5, 6], [5], {6}),  # hit@3 only, plan wrong
        _outcome([8], [], {9}, group="trigger"),  # miss, empty plan
    ]
    scores = summarise(outcomes)
    assert scores.prompts == 3
    assert scores.recall_at_1 == pytest.approx(1 / 3) and scores.recall_at_3 == pytest.approx(2 / 3)
    assert scores.plan_precision == pytest.approx(2 / 3)  # 2 of the 3 planned adapters are correct
    assert scores.plan_hit == pytest.approx(1 / 3) and scores.empty == pytest.approx(1 / 3)
    assert group_recall(outcomes) == {"caption": 1.0, "trigger": 0.0}
    assert math.isnan(summarise([_outcome([1], [], {1})]).plan_precision)


def test_acceptable_needs_every_fixed_attribute() -> None:
    fixed = [(1, (("foreground", "red"),)), (2, (("foreground", "red"), ("shape", "star"))), (3, ())]
    assert acceptable_ids({"foreground": "red", "shape": "circle"}, fixed) == {1}
    assert acceptable_ids({"foreground": "red", "shape": "star"}, fixed) == {1, 2}


def test_both_vectors_give_the_mean_cosine_and_the_table_embedder_routes() -> None:
    rng = np.random.default_rng(0)
    t, w, q = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.standard_normal((3, 2, 8)))
    combined, query = both_vectors(t, w), both_vectors(q, q)
    np.testing.assert_allclose(np.linalg.norm(combined, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(query @ combined.T, (q @ t.T + q @ w.T) / 2, atol=1e-6)
    table = TableEmbedder("t", {"a": t[0], "b": t[1]}, lambda texts: np.tile(w[0], (len(texts), 1)))
    out = table.embed(["b", "prompt", "a"])
    np.testing.assert_allclose(out, np.stack([t[1], w[0], t[0]]), atol=1e-6)
    assert table.dimension == 8


def test_labelled_prompts() -> None:
    heart = novel_concept("heart")
    fixed = [(1000, (("foreground", "red"),))]
    prompts = starter_prompts(heart, frozenset({1}), fixed, captions=4)
    assert [p.group for p in prompts] == ["trigger", "description", *["caption"] * 4]
    assert prompts[0].prompt == "hartok" and all("hartok" in p.prompt for p in prompts[2:])
    assert all(p.acceptable <= {1000} for p in prompts)
    assert all(bool(p.acceptable) == (" red " in p.prompt.split(" on ")[0]) for p in prompts[2:])  # red foreground
    ring = novel_concept("ring")
    named = named_prompts(ring, frozenset({2, 3}), fixed, captions=2)
    assert named[0].prompt == "ring shape" and all("anulon" not in p.prompt for p in named)
    assert all("ring" in p.prompt for p in named[2:]) and all(p.relevant == {2, 3} for p in named)


def _starter(adapter_id: int, name: str) -> AdapterRecord:
    concept = novel_concept(name)
    return AdapterRecord(id=adapter_id, sha256=f"{adapter_id:064x}", name=name, title=name, path="", format="kohya",
                         base="toy", rank=4, triggers=[concept.trigger], description=concept.description,
                         kind="content" if concept.kind == "content" else "style")


def test_text_row_on_a_tiny_library() -> None:
    starters = Starters([_starter(1, "heart"), _starter(2, "grid")], {1: novel_concept("heart"),
                                                                     2: novel_concept("grid")})
    distractors = list(enumerate(distractor_jobs()[:20], start=1000))
    row, labelled = text_row(starters, distractors, HashingEmbedder(), captions=2)
    assert row.library == 22 and row.scores is not None and row.scores.prompts == len(labelled) == 8
    assert row.groups["trigger"] == 1.0  # an exact trigger word always finds its adapter


def _tiny_adapter(seed: int) -> LoraAdapter:
    g = torch.Generator().manual_seed(seed)
    return LoraAdapter({"unet.a.to_q": LoraModule(torch.randn(2, 8, generator=g), torch.randn(6, 2, generator=g), 2.0),
                        "unet.b.to_v": LoraModule(torch.randn(2, 4, generator=g), torch.randn(6, 2, generator=g), 2.0)})


def test_weight_rows_search_anonymous_adapters() -> None:
    names = ["ring", "ring", "heart", None, None]
    entries = [CorpusEntry(_tiny_adapter(i), {"name": f"x{i}", "description": f"d{i}", "novel": novel,
                                              "fixed": [["shape", novel or "star"]]})
               for i, novel in enumerate(names)]
    text = HashingEmbedder(dimension=16)
    config = WeightEncoderConfig.from_adapters([e.adapter for e in entries], out_dim=16, d_model=16, n_heads=2,
                                               n_blocks=1, text_embedder=text.name)
    weights = WeightEmbedder(WeightEncoder(config).eval())
    heldout, seen = weight_rows(Starters([], {}), entries, weights, text, HELDOUT_CONCEPTS, captions=1)
    assert heldout.mode == "weights (held-out)" and heldout.library == 5
    assert heldout.scores is not None and heldout.scores.prompts == 3  # ring: name, description, one caption
    assert seen.scores is not None and seen.scores.prompts == 3  # heart


def test_missing_encoder_is_reported_and_json_keys(tmp_path) -> None:
    weights, entries, heldout, note = load_weights(tmp_path / "none", tmp_path)
    assert weights is None and entries == [] and list(heldout) == list(HELDOUT_CONCEPTS)
    assert "python -m training.weight_encoder" in note
    text = summarise([_outcome([1], [1], {1})])
    rows = [Row("text", 3, text, {"caption": 1.0}), Row("weights (held-out)", note="missing")]
    summary = json_summary(rows, heldout, False, note)
    for key in ("recall_at_1_text", "recall_at_3_text", "recall_at_3_weights_heldout", "recall_at_3_both"):
        assert key in summary
    assert summary["recall_at_3_text"] == 1.0 and summary["recall_at_3_weights_heldout"] is None
    assert summary["weights_available"] is False and summary["weights_note"] == note
