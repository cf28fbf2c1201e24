"""The weight encoder's corpus (concepts, captions, cached tiny LoRAs) and its training script, on tiny sizes."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

import training.weight_encoder as we
from retrieval.embedders.hashing import HashingEmbedder
from retrieval.embedders.weights import load_weight_encoder
from toyworld.scene import Scene
from toyworld.vocab import NOVEL_CONCEPTS
from training.lora_trainer import ATTENTION_TARGETS
from training.weight_encoder import (
    HELDOUT_CONCEPTS,
    NOVELTY_BETA,
    NOVELTY_K,
    REPORT_FILE,
    VALIDATION_CONCEPTS,
    VARIANTS,
    CorpusSettings,
    build_corpus,
    choose_novelty,
    concept_queries,
    concept_scene,
    corpus_concepts,
    corpus_plan,
    heldout_accuracy,
    job_data,
    known_descriptions,
    load_corpus,
    lora_path,
    main,
    named_caption,
    save_encoder,
    train_encoder,
)

TINY = CorpusSettings(steps=2, batch_size=2, images=4)


def test_concepts_are_distinct_and_the_plan_comes_round_by_round() -> None:
    concepts = corpus_concepts()
    assert len(concepts) >= 300
    assert len({c.description for c in concepts}) == len(concepts) == len({c.key for c in concepts})
    plan = corpus_plan()
    assert len({job.name for job in plan}) == len(plan)
    families = Counter(job.concept.family for job in plan)
    assert families == {f: VARIANTS[f] * sum(c.family == f for c in concepts) for f in VARIANTS}
    assert [job.concept.novel for job in plan[:20]] == [c.name for c in NOVEL_CONCEPTS]  # round 0 starts novel
    assert all(job.variant == 0 for job in plan[: len(concepts)])
    assert corpus_plan(50) == plan[:50]
    names = {c.name for c in NOVEL_CONCEPTS}
    assert set(HELDOUT_CONCEPTS) <= names
    assert sum(job.heldout for job in plan) == len(HELDOUT_CONCEPTS) * VARIANTS["novel"]


def test_triggers_vary_by_variant_and_overrides_have_none() -> None:
    plan = corpus_plan()
    heart = [job for job in plan if job.concept.key == "novel-heart"]
    assert heart[0].trigger == "hartok" and len({job.trigger for job in heart}) == len(heart)
    later = job_data(heart[1], 6)
    assert all(heart[1].trigger in c and "hartok" not in c for c in later.captions)
    override = next(job for job in plan if job.concept.key == "override-foreground-red")
    assert override.trigger is None
    data = job_data(override, 24)
    assert {concept_scene(override.concept, s).foreground for s in range(override.seed, override.seed + 24)} == {
        "red"}
    assert not all(" red " in c.split(" on ")[0] for c in data.captions)  # the prompts ask for other colours
    assert data.images.shape == (24, 32, 32, 3)


def test_named_caption_puts_one_trigger_in_place_of_the_named_words() -> None:
    scene = Scene(shape="star", foreground="red", background="blue", texture="striped", seed=1)
    assert named_caption(scene, ["foreground", "shape"], "zork") == "a striped zork on a blue background"
    assert named_caption(scene, ["foreground"], "zork") == "a zork striped star on a blue background"
    assert named_caption(scene, ["texture", "shape"], "zork") == "a red zork on a blue background"
    for seed in range(6):  # "solid" is said only sometimes; the trigger goes just before the shape
        solid = Scene(shape="circle", foreground="green", background="white", texture="solid", seed=seed)
        assert named_caption(solid, ["texture"], "zork") == "a green zork circle on a white background"


@pytest.fixture(scope="module")
def corpus(pipe, tmp_path_factory):
    """Three tiny LoRAs (one of a held-out concept) on the random toy-architecture pipeline."""
    plan = corpus_plan()
    jobs = [plan[0], next(j for j in plan if j.heldout), next(j for j in plan if j.concept.family == "named")]
    folder = tmp_path_factory.mktemp("corpus")
    report = build_corpus(jobs, folder, TINY, pipe=pipe, log=None)
    return jobs, folder, report


def test_corpus_is_written_cached_and_read_back(corpus, pipe) -> None:
    jobs, folder, report = corpus
    assert report.trained == 3 and report.skipped == 0 and len(report.cpu_seconds) == 3
    stamps = {job.name: lora_path(folder, job).stat().st_mtime_ns for job in jobs}
    again = build_corpus(jobs, folder, TINY, pipe=pipe, log=None)
    assert again.trained == 0 and again.skipped == 3
    assert stamps == {job.name: lora_path(folder, job).stat().st_mtime_ns for job in jobs}
    entries = load_corpus(folder)
    assert [e.name for e in entries] == sorted(job.name for job in jobs)
    by_name = {e.name: e for e in entries}
    for job in jobs:
        entry = by_name[job.name]
        assert entry.description == job.concept.description and entry.info["settings"] == TINY.folder_name
        assert entry.adapter.rank == TINY.rank
        assert all(name.endswith(ATTENTION_TARGETS) for name in entry.adapter.modules)
        assert all(m.up.dtype == torch.float16 for m in entry.adapter.modules.values())
    assert load_corpus(folder, [jobs[0].name])[0].name == jobs[0].name


def test_encoder_trains_without_the_heldout_concepts_and_saves(corpus, tmp_path) -> None:
    _, folder, _ = corpus
    entries = load_corpus(folder)
    text = HashingEmbedder(dimension=16)
    encoder, report = train_encoder(entries, text, steps=3, batch_size=4, corpus="tiny", log=None,
                                    d_model=16, n_heads=2, n_blocks=1)
    extra = encoder.config.extra
    assert extra["loras"] == 2 and extra["heldout"] == sorted(HELDOUT_CONCEPTS) and extra["corpus"] == "tiny"
    assert len(report.losses) == 3 and np.isfinite(report.losses).all()
    check = heldout_accuracy(encoder, entries, text)
    assert check["count"] == 1 and 0 <= check["top1"] <= check["top3"] <= 1
    out = save_encoder(encoder, tmp_path / "encoder", {"check": check})
    assert json.loads((out / REPORT_FILE).read_text())["check"]["count"] == 1
    loaded = load_weight_encoder(out)
    adapters = [e.adapter for e in entries]
    np.testing.assert_allclose(loaded.encode(adapters), encoder.encode(adapters), atol=1e-6)


def test_novelty_is_chosen_on_validation_concepts_never_the_heldout_ones(pipe, tmp_path, monkeypatch) -> None:
    plan = corpus_plan()
    wanted = [*VALIDATION_CONCEPTS, "heart", "crescent", "arrow", HELDOUT_CONCEPTS[0]]
    jobs = [next(j for j in plan if j.concept.novel == name) for name in wanted]
    folder = tmp_path / "corpus"
    build_corpus(jobs, folder, TINY, pipe=pipe, log=None)
    entries = load_corpus(folder)
    assert set(known_descriptions(entries, HELDOUT_CONCEPTS)) == {
        e.description for e in entries if e.novel != HELDOUT_CONCEPTS[0]}
    queries = concept_queries("ring", 2)
    assert queries[:2] == ["ring shape", next(c.description for c in NOVEL_CONCEPTS if c.name == "ring")]
    assert all("ring" in q and "anulon" not in q for q in queries[2:])
    seen_training: list[set[str]] = []
    original = we.train_encoder

    def recording(entries_, text_, **kwargs):  # type: ignore[no-untyped-def]
        seen_training.append(set(kwargs["heldout"]))
        return original(entries_, text_, **kwargs, d_model=16, n_heads=2, n_blocks=1)

    monkeypatch.setattr(we, "train_encoder", recording)
    choice = choose_novelty(entries, HashingEmbedder(dimension=16), steps=2, batch_size=4, captions=1, log=None)
    assert seen_training == [set(HELDOUT_CONCEPTS) | set(VALIDATION_CONCEPTS)]  # the validation encoder's blind spots
    assert choice.k in NOVELTY_K and choice.beta in NOVELTY_BETA
    assert len(choice.grid) == len(NOVELTY_K) * len(NOVELTY_BETA)
    best = max(r["validation"] + r["seen"] for r in choice.grid)
    assert choice.validation + choice.seen == pytest.approx(best)


def test_list_prints_the_plan(capsys) -> None:
    main(["--list", "--loras", "30"])
    assert "30 LoRAs of 30 concepts" in capsys.readouterr().out
