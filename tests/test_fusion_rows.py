"""Heterogeneous batches: images with different adapter sets in one UNet pass, each matching its solo run."""

import numpy as np
import pytest

from fusion import AdapterSpec, compose
from fusion.rows import row_plan
from fusion.testing import random_lora
from pipeline import generate
from training.testing import random_toy_base

PROMPTS = ["a red circle", "a blue square", "a green star", "a pink cross"]


@pytest.fixture(scope="module")
def base():
    return random_toy_base()


@pytest.fixture(scope="module")
def sets(base):
    unet = base.pipe.unet
    a, b, c = (random_lora(unet, r, s, alpha=r, strength=2.0) for s, r in enumerate((4, 8, 4)))
    content, style, other = (AdapterSpec("a", a, 0.8, role="content"), AdapterSpec("b", b, 0.7, role="style"),
                             AdapterSpec("c", c, 0.6, role="style"))
    return [[content], [style, other], [], [AdapterSpec("a", a, 0.5, role="content", te_weight=0.0), other]]


def pixels(image):
    return np.asarray(image, dtype=int)


def test_row_plan_stacks_the_union_and_gives_each_row_its_weights(sets):
    plan = row_plan(sets)
    assert [spec.name for spec in plan.entries] == ["a", "b", "c"] and all(s.weight == 1.0 for s in plan.entries)
    np.testing.assert_allclose(plan.unet.numpy(), [[0.8, 0, 0], [0, 0.7, 0.6], [0, 0, 0], [0.5, 0, 0.6]], rtol=1e-6)
    np.testing.assert_allclose(plan.text.numpy(), [[0.8, 0, 0], [0, 0.7, 0.6], [0, 0, 0], [0.0, 0, 0.6]], rtol=1e-6)


@pytest.mark.parametrize("fusion", ["merge", "gated"])  # gated: per-step role curves and adapter guidance per row
def test_each_image_of_a_mixed_batch_matches_its_solo_run(base, sets, fusion):
    mixed = generate(base, PROMPTS, seed=[1, 2, 3, 4], steps=4, adapters=sets, fusion=fusion)
    assert mixed.notices == []  # one pass, no grouping
    assert [[a["alias"] for a in p.adapters] for p in mixed.provenance] == [["a"], ["b", "c"], [], ["a", "c"]]
    for index, prompt in enumerate(PROMPTS):
        solo = generate(base, prompt, seed=1 + index, steps=4, adapters=sets[index], fusion=fusion)
        # per-row coefficients multiply the low-rank activations instead of the stacked up projection, and the
        # batch is 4 rows instead of 1: float32 rounding moves a pixel by at most one level (measured: 1)
        assert np.abs(pixels(solo.images[0]) - pixels(mixed.images[index])).max() <= 1, index
    assert base.fusion.attached is None  # the base is itself again


def test_a_method_that_cannot_batch_groups_by_set_and_says_so(base, sets):
    progress: list[tuple[int, int]] = []
    mixed = generate(base, PROMPTS, seed=[1, 2, 3, 4], steps=3, adapters=sets, fusion="switch",
                     on_step=lambda done, total: progress.append((done, total)))
    assert "cannot give the images of one batch their own adapters; rendered 4 runs" in mixed.notices[0]
    assert progress == [(done, 12) for done in range(1, 13)]  # every run's steps, counted over all four
    solo = generate(base, PROMPTS[1], seed=2, steps=3, adapters=sets[1], fusion="switch")
    assert np.array_equal(pixels(solo.images[0]), pixels(mixed.images[1]))  # a run of one is the solo run


def test_rows_are_refused_by_methods_that_cannot_batch(base, sets):
    plan = row_plan(sets)
    with compose(base.pipe, plan.entries, "switch") as session:
        with pytest.raises(ValueError, match="cannot give the rows"):
            session.set_rows(plan.unet, plan.text)
    with compose(base.pipe, plan.entries, "merge") as session:
        with pytest.raises(ValueError, match=r"\[rows, 3\]"):
            session.set_rows(plan.unet[:, :2], plan.text)
