"""Concept splitting, candidate selection, Stylus weights, triggers, masks, base filter, threshold."""

from __future__ import annotations

import json

import pytest

from library.records import AdapterRecord
from retrieval.composer import ComposerConfig, batch_masks, compose, plan_triggers, select
from retrieval.concepts import split_concepts
from retrieval.embedders.hashing import HashingEmbedder
from retrieval.plan import Plan
from retrieval.scoring import Scored, TermIndex
from retrieval.search import Retriever


def record(adapter_id: int, name: str, *, triggers=(), description="", kind="content", base="toy",
           weight=0.8, tags=()) -> AdapterRecord:
    return AdapterRecord(
        id=adapter_id, sha256=f"{adapter_id:064x}", name=name, title=name.replace("-", " "),
        path=f"/{name}.safetensors", format="kohya", base=base, rank=4, triggers=list(triggers), tags=list(tags),
        description=description, kind=kind, preferred_weight=weight,
    )


def test_split_concepts() -> None:
    texts = lambda prompt: [c.text for c in split_concepts(prompt)]  # noqa: E731
    assert texts("a red hartok on a blue background") == ["red hartok", "blue background"]
    assert texts("a cat with a hat and sunglasses, in the style of van gogh") == [
        "cat", "hat", "sunglasses", "van gogh"]
    assert texts("<lora:foo:0.8> (masterpiece:1.2), a knight; watercolor style") == [
        "masterpiece", "knight", "watercolor style"]
    assert texts("") == [] and texts(" , ,") == []
    assert texts("hartok, hartok") == ["hartok"]
    hints = [(c.text, c.kind_hint) for c in split_concepts("portrait of a woman in the style of picasso and monet")]
    assert hints == [("portrait of a woman", None), ("picasso", "style"), ("monet", "style")]
    [concept] = split_concepts("  a crescent  ")
    assert "  a crescent  ".strip()[concept.start : concept.end] == "crescent"


def scored(*items: tuple[int, float]) -> list[Scored]:
    return [Scored(i, s, s, ()) for i, s in items]


def test_select_caps_and_uses_each_adapter_once() -> None:
    config = ComposerConfig(threshold=0.5, relative_margin=1.0)
    chosen = select([scored((1, 0.9), (2, 0.85), (3, 0.8), (4, 0.75), (5, 0.7)),
                     scored((1, 0.95), (6, 0.6), (7, 0.2))], config)
    assert [s.id for s in chosen[0]] == [2, 3, 4]  # 1 went to the concept where it scores best
    assert [s.id for s in chosen[1]] == [1, 6]  # 7 is under the threshold
    assert all(len(group) <= 3 for group in chosen)
    margin = select([scored((1, 0.9), (2, 0.85), (3, 0.7))], ComposerConfig(threshold=0.5, relative_margin=0.1))
    assert [s.id for s in margin[0]] == [1, 2]
    capped = select([scored((1, 0.9), (2, 0.85)), scored((3, 0.8))], ComposerConfig(max_total=2, relative_margin=1))
    assert sum(len(g) for g in capped) == 2


def test_compose_weights_triggers_and_json() -> None:
    records = {
        1: record(1, "heart", triggers=["hartok"], weight=0.9),
        2: record(2, "heart-alt", triggers=["hartok2", "second"]),
        3: record(3, "stripes", triggers=["slantor"], kind="style"),
    }
    concepts = split_concepts("a red heart on diagonal stripes hartok")
    plan = compose("a red heart on diagonal stripes hartok", concepts,
                   [scored((1, 0.9), (2, 0.85)), scored((3, 0.8))], records,
                   base="toy", config=ComposerConfig(relative_margin=1.0))
    weights = {a.name: a.weight for a in plan.adapters}
    assert weights == pytest.approx({"heart": 0.45, "heart-alt": 0.4, "stripes": 0.8})
    # triggers are placed as generation places them (library.triggers): missing ones in front
    assert plan.final_prompt == "hartok2, slantor, a red heart on diagonal stripes hartok"
    assert [(p.name, p.weight, p.role, p.source) for p in plan.picks()] == [
        ("heart", pytest.approx(0.45), "content", "auto"), ("heart-alt", pytest.approx(0.4), "content", "auto"),
        ("stripes", pytest.approx(0.8), "style", "auto")]
    data = json.loads(json.dumps(plan.to_dict()))
    assert Plan.from_dict(data).to_dict() == plan.to_dict()
    assert plan_triggers("", plan.adapters) == "hartok, hartok2, slantor"


def test_batch_masks_and_per_image_weights() -> None:
    masks = batch_masks([3, 1, 0], batch=6, seed=1)
    assert len(masks) == 6 and masks[0] == ((True, True, True), (True,), ())
    for mask in masks[1:]:
        first = mask[0]
        assert sum(first) in (0, 1, 3)  # none, one-hot or all
        assert mask[2] == ()
    assert masks == batch_masks([3, 1, 0], batch=6, seed=1)  # deterministic
    records = {i: record(i, f"a{i}") for i in range(1, 4)}
    plan = compose("x, y", split_concepts("x, y"), [scored((1, 0.9), (2, 0.9)), scored((3, 0.9))], records,
                   batch=8, seed=3, config=ComposerConfig(relative_margin=1.0))
    assert plan.images[0].adapters == plan.adapters
    for image in plan.images:
        first_concept = [a for a in image.adapters if a.concept == 0]
        for adapter in first_concept:
            assert adapter.weight == pytest.approx(0.8 / len(first_concept))
    assert len({tuple(a.id for a in image.adapters) for image in plan.images}) > 1


def test_term_index_finds_whole_words() -> None:
    terms = TermIndex([record(1, "toy-heart", triggers=["hartok"]), record(2, "bolt", triggers=["zig zag bolt"])])
    assert terms.find("a red Hartok!") == {1: [("trigger", "hartok")]}
    assert terms.find("hartoks") == {}
    assert 2 in terms.find("a zig zag bolt") and 1 in terms.find("toy heart")


@pytest.fixture()
def library() -> list[AdapterRecord]:
    return [
        record(1, "heart", triggers=["hartok"], description="a heart shape with two rounded lobes"),
        record(2, "heart-sd1", triggers=["hartok"], description="a heart shape with two rounded lobes", base="sd1"),
        record(3, "heart-any", triggers=["hartokany"], description="a heart shape", base="unknown"),
        record(4, "stripes", triggers=["slantor"], description="diagonal stripes", kind="style"),
        record(5, "rocket", triggers=["rakete"], description="a space rocket launching"),
    ]


def test_retriever_base_filter_threshold_and_triggers(library) -> None:
    retriever = Retriever(library, HashingEmbedder(), persist=False)
    plan = retriever.plan("a hartok with slantor", base="toy")
    names = {a.name for a in plan.adapters}
    assert "heart" in names and "stripes" in names and "heart-sd1" not in names
    assert plan.concepts[0].adapters[0].name == "heart"
    sd1 = retriever.plan("a hartok", base="sd1")
    assert [a.name for a in sd1.adapters] == ["heart-sd1"]
    assert {r.name for r in retriever.search("hartok heart shape", k=5, base="sdxl")} <= {"heart-any"}
    assert retriever.plan("a photograph of a horse galloping", base="toy").adapters == ()
    unfiltered = {r.name for r in retriever.search("hartok", k=5)}
    assert {"heart", "heart-sd1"} <= unfiltered
