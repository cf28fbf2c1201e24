"""The composition benchmark's scoring helpers, from judge labels to rows (no images generated)."""

from __future__ import annotations

import pytest

from benchmarks.composition import (
    Combo,
    ComboResult,
    ImageScore,
    best_method,
    concepts_from_names,
    kept_attributes,
    pair_combos,
    roles_for,
    score_image,
    score_images,
    select_combos,
    summarise,
    summarise_methods,
    sweep_methods,
    triple_combos,
)
from toyworld.concepts import COMPOSITION_HELDOUT, combined_scenes, concept_prompts
from toyworld.vocab import NOVEL_CONCEPTS, novel_concept

HEART, RING, GRID, GRADIENT, PASTEL, DUSK = (
    novel_concept(n) for n in ("heart", "ring", "grid", "gradient", "pastel", "dusk")
)


def labels_of(*concepts):
    return concept_prompts(combined_scenes(concepts, [7]))[1][0]


def test_concepts_from_names_keeps_vocabulary_order_and_reports_strangers():
    concepts, unknown = concepts_from_names(["grid", "heart", "my-own-lora", "pastel"])
    assert [c.name for c in concepts] == ["heart", "grid", "pastel"]
    assert unknown == ["my-own-lora"]


def test_pairs_are_content_times_textures_and_palettes():
    pairs = pair_combos([HEART, RING, GRID, PASTEL])
    assert [p.name for p in pairs] == ["heart+grid", "heart+pastel", "ring+grid", "ring+pastel"]
    assert [p.heldout for p in pairs] == [False, False, True, True]


def test_triples_are_a_seeded_sample_of_all_three_kinds():
    concepts = list(NOVEL_CONCEPTS)
    triples = triple_combos(concepts, 16)
    assert len(triples) == 16 and triples == triple_combos(concepts, 16)
    assert all([c.kind for c in t.concepts] == ["content", "style", "palette"] for t in triples)
    assert triple_combos([HEART, GRID], 16) == []  # no palette: no triple


def test_seeds_are_fixed_by_the_concepts_and_distinct_between_combinations():
    combos = pair_combos(NOVEL_CONCEPTS) + triple_combos(NOVEL_CONCEPTS, 1000)
    seeds = [s for c in combos for s in c.seeds(4)]
    assert len(seeds) == len(set(seeds))
    assert Combo((HEART, GRID)).seeds(2) == Combo((HEART, GRID)).seeds(4)[:2]
    with pytest.raises(ValueError):
        Combo((HEART, GRID)).seeds(0)


def test_selection_takes_half_held_out_spread_over_the_list():
    pairs = pair_combos(NOVEL_CONCEPTS)
    chosen = select_combos(pairs, 6)
    assert len(chosen) == 6 and sum(c.heldout for c in chosen) == 3
    assert chosen == [p for p in pairs if p in chosen]  # list order kept
    assert len({c.concepts[0] for c in chosen}) > 1
    assert select_combos(pairs, None) == pairs
    assert select_combos(pairs, 1)[0].heldout


def test_roles_make_palettes_other_only_for_pairwise_methods_in_a_triple():
    triple = (HEART, GRID, PASTEL)
    assert roles_for("gated", triple) == ["content", "style", "style"]
    assert roles_for("klora", triple) == ["content", "style", "other"]
    assert roles_for("b4m", (HEART, PASTEL)) == ["content", "style"]


def test_kept_attributes_are_what_the_concepts_leave_alone():
    assert kept_attributes((HEART, GRID)) == ("foreground", "background", "palette")
    assert kept_attributes((HEART, PASTEL)) == ("foreground", "background", "texture")
    assert kept_attributes((HEART, GRID, PASTEL)) == ("foreground", "background")


def test_palette_scenes_keep_their_colour_labels():
    labels = labels_of(HEART, PASTEL)
    assert labels["palette"] == "pastel" and labels["shape"] == "heart"
    assert labels["foreground"] in {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"}


def test_score_image_from_judge_labels():
    expected = labels_of(HEART, GRID)
    assert score_image(expected, expected, (HEART, GRID)) == ImageScore(True, True, 1.0)
    no_style = {**expected, "texture": "solid"}
    assert score_image(no_style, expected, (HEART, GRID)) == ImageScore(True, False, 1.0)
    other_background = "white" if expected["background"] != "white" else "black"
    recoloured = {**expected, "shape": "circle", "background": other_background}
    score = score_image(recoloured, expected, (HEART, GRID))
    assert (score.content, score.style, score.both) == (False, True, False)
    assert score.kept == pytest.approx(2 / 3)


def test_score_image_of_a_triple_needs_all_three():
    expected = labels_of(HEART, GRID, PASTEL)
    assert score_image(expected, expected, (HEART, GRID, PASTEL)).both
    plain = {**expected, "palette": "plain"}
    score = score_image(plain, expected, (HEART, GRID, PASTEL))
    assert score.content and not score.style and not score.both and score.kept == 1.0


def result(combo, method, flags, seconds=1.0):
    scores = [ImageScore(c, s, k) for c, s, k in flags]
    return ComboResult(combo, method, (1.0, 1.0), scores, seconds)


def test_summarise_splits_held_out_pairs():
    seen, held = Combo((HEART, GRID)), Combo((RING, GRID))
    assert held.heldout and not seen.heldout and "ring" in COMPOSITION_HELDOUT
    row = summarise([
        result(seen, "merge", [(True, True, 1.0), (True, False, 0.5)], seconds=2.0),
        result(held, "merge", [(False, True, 1.0), (True, True, 0.0)], seconds=6.0),
    ])
    assert (row.content, row.style, row.both) == (0.75, 0.75, 0.5)
    assert row.both_heldout == 0.5 and row.heldout_images == 2 and row.images == 4
    assert row.attributes_kept == pytest.approx(0.625)
    assert row.seconds_per_image == 2.0
    assert summarise([result(seen, "merge", [(True, True, 1.0)], seconds=None)]).seconds_per_image is None
    only_seen = summarise([result(seen, "merge", [(True, True, 1.0)])])
    assert only_seen.both_heldout is None and only_seen.to_json()["both_heldout"] is None
    with pytest.raises(ValueError):
        summarise([])


def test_scores_from_reads_to_rows_per_method():
    combo = Combo((HEART, DUSK))
    expected = labels_of(HEART, DUSK)
    reads = [expected, {**expected, "palette": "plain"}]
    scores = score_images(reads, [expected, expected], combo.concepts)
    rows = summarise_methods([ComboResult(combo, "gated", (1.0, 1.0), scores, 0.4)], ["merge", "gated"])
    assert list(rows) == ["gated"]
    assert rows["gated"].both == 0.5 and rows["gated"].both_heldout == 0.5


def test_best_method_is_the_highest_both_heldout():
    seen, held = Combo((HEART, GRID)), Combo((HEART, GRADIENT))
    rows = {
        "merge": summarise([result(seen, "merge", [(True, True, 1)]), result(held, "merge", [(True, False, 1)])]),
        "gated": summarise([result(seen, "gated", [(True, False, 1)]), result(held, "gated", [(True, True, 1)])]),
        "klora": summarise([result(seen, "klora", [(True, True, 1)]), result(held, "klora", [(True, True, 1)])]),
    }
    assert best_method(rows) == "klora"  # gated ties on held-out, klora wins on both
    del rows["klora"]
    assert best_method(rows) == "gated"
    only_seen = {"merge": summarise([result(seen, "merge", [(True, False, 1)])]),
                 "switch": summarise([result(seen, "switch", [(True, True, 1)])])}
    assert best_method(only_seen) == "switch"
    assert best_method({}) is None
    assert sweep_methods("gated", {"merge": ("merge", {})}) == ["merge", "gated"]
    assert sweep_methods("merge", {"merge": ("merge", {})}) == ["merge"]
