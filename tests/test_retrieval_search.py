"""The Retriever: index persistence and sync, embedder change, and search on the toy world with MiniLM."""

from __future__ import annotations

import dataclasses

import pytest

from library.records import AdapterRecord
from retrieval.embedders.hashing import HashingEmbedder
from retrieval.index import read_header
from retrieval.paths import index_dir
from retrieval.search import Retriever
from toyworld.vocab import NOVEL_CONCEPTS


def toy_records() -> list[AdapterRecord]:
    return [
        AdapterRecord(
            id=index + 1, sha256=f"{index:064x}", name=f"toy-{concept.name}", title=f"{concept.name} ({concept.kind})",
            path=f"assets/starter/{concept.name}.safetensors", format="medley", base="toy", rank=4,
            triggers=[concept.trigger], tags=[concept.kind, concept.name], description=concept.description,
            kind="content" if concept.kind == "content" else "style",
        )
        for index, concept in enumerate(NOVEL_CONCEPTS)
    ]


def test_index_is_saved_reopened_and_synced(medley_home) -> None:
    records = toy_records()
    first = Retriever(records, HashingEmbedder())
    assert first.last_sync.rebuilt and first.last_sync.embedded == len(records)
    header = read_header(index_dir())
    assert header is not None and header["count"] == len(records) and header["embedder"] == HashingEmbedder().name
    assert index_dir() == medley_home / "index"

    again = Retriever(records, HashingEmbedder())
    assert not again.last_sync.rebuilt and again.last_sync.embedded == 0 and again.last_sync.diff.empty

    changed = [dataclasses.replace(records[0], description="a totally different heart")] + records[2:]
    changed.append(dataclasses.replace(records[1], id=99))
    synced = Retriever(changed, HashingEmbedder())
    diff = synced.last_sync.diff
    assert diff.changed == [1] and diff.removed == [2] and diff.added == [99] and synced.last_sync.embedded == 2
    assert sorted(synced.index.ids()) == sorted(r.id for r in changed)
    assert read_header(index_dir())["fingerprint"] == synced.index.fingerprint()  # type: ignore[index]

    report = synced.sync(records)  # the same object syncs back
    assert report.diff.added == [2] and report.diff.removed == [99] and len(synced.index) == len(records)


def test_embedder_change_triggers_rebuild() -> None:
    records = toy_records()
    Retriever(records, HashingEmbedder(dimension=64))
    other = Retriever(records, HashingEmbedder(dimension=128))
    assert other.last_sync.rebuilt and other.last_sync.embedded == len(records)
    assert other.index.dimension == 128
    header = read_header(index_dir())
    assert header is not None and header["embedder"] == HashingEmbedder(dimension=128).name
    same_dim = Retriever(records, HashingEmbedder(dimension=128, trigrams=False))
    assert same_dim.last_sync.rebuilt  # same dimension, other embedder name


def test_in_memory_retriever_writes_nothing(medley_home) -> None:
    Retriever(toy_records(), HashingEmbedder(), persist=False)
    assert not (medley_home / "index").exists()


@pytest.fixture(scope="module")
def minilm_retriever(tmp_path_factory) -> Retriever:
    from retrieval.embedders.text import TextEmbedder

    return Retriever(toy_records(), TextEmbedder(), home=tmp_path_factory.mktemp("home"))


@pytest.mark.parametrize("concept", NOVEL_CONCEPTS, ids=[c.name for c in NOVEL_CONCEPTS])
def test_minilm_search_ranks_adapter_top3(minilm_retriever: Retriever, concept) -> None:
    expected = f"toy-{concept.name}"
    by_trigger = [r.name for r in minilm_retriever.search(f"a {concept.trigger}", k=3, base="toy")]
    by_description = [r.name for r in minilm_retriever.search(concept.description, k=3, base="toy")]
    assert expected in by_trigger, by_trigger
    assert expected in by_description, by_description


def test_minilm_plan_composes_concepts(minilm_retriever: Retriever) -> None:
    plan = minilm_retriever.plan("a red hartok on a blue background, slantor, mellowin", base="toy", batch=4)
    assert [a.name for a in plan.adapters] == ["toy-heart", "toy-diagonal", "toy-pastel"]
    assert [a.role for a in plan.adapters] == ["content", "style", "style"]
    assert all(a.weight == pytest.approx(0.8) for a in plan.adapters)
    assert plan.final_prompt == plan.prompt  # the triggers are already there
    assert len(plan.images) == 4 and plan.images[0].adapters == plan.adapters

    by_words = minilm_retriever.plan("a green heart with diagonal stripes", base="toy")
    assert [a.name for a in by_words.adapters] == ["toy-heart", "toy-diagonal"]
    assert by_words.final_prompt == "hartok, slantor, a green heart with diagonal stripes"  # as generation places them

    assert minilm_retriever.plan("a yellow striped square on a black background", base="toy").adapters == ()
    assert minilm_retriever.plan("a photo of a cat", base="toy").adapters == ()
    assert minilm_retriever.plan("a red hartok", base="sdxl").adapters == ()


def test_phrase_index_finds_quoted_descriptions_only() -> None:
    from retrieval.scoring import PhraseIndex

    phrases = PhraseIndex()
    phrases.add(1, "Neon palette (glarix): style adapter. Toy-world palette: a glowing halo around the shape.")
    phrases.add(2, "Ring shape: a thick ring around a hole, glowing")
    assert phrases.find("a glowing halo around the shape") == [1]
    assert phrases.find("the Glowing  HALOS around shapes") == [1]  # case, spacing and plural do not matter
    assert phrases.find("a halo glowing around the shape") == []  # the words must come in order
    assert phrases.find("glowing halo") == []  # fewer than three content words quote nothing
    phrases.remove(1)
    assert phrases.find("a glowing halo around the shape") == []


def test_a_phrase_quoted_from_a_long_description_finds_its_adapter() -> None:
    """The embedding of a long description ranks one of its phrases far down among many look-alikes;
    the phrase evidence brings the adapter back to the top."""
    target = AdapterRecord(
        id=1, sha256="f" * 64, name="neon", title="Neon colour palette (glarix)", path="neon.safetensors",
        format="medley", base="toy", rank=4, triggers=["glarix"], tags=["toy world", "colour palette", "neon"],
        description="Toy-world colour palette: a glowing halo around the shape. " + "Bright saturated tones. " * 3,
        kind="style",
    )
    shapes = ["circle", "ring", "square", "star", "triangle", "heart", "crescent", "diamond"]
    distractors = [
        AdapterRecord(
            id=10 + i, sha256=f"{i:064x}", name=f"{shape}-shape-{i}", title=f"{shape} shape", path=f"d{i}.safetensors",
            format="medley", base="toy", rank=4, triggers=[], tags=["shape", shape],
            description=f"every shape turned into a {shape} around the centre", kind="content",
        )
        for i, shape in enumerate(shapes * 25)
    ]
    retriever = Retriever([target, *distractors], HashingEmbedder(), persist=False)
    query = retriever.embedder.embed(["a glowing halo around the shape"])[0]
    closer = sum(float(retriever.index.vectors([d.id])[0] @ query) > float(retriever.index.vectors([1])[0] @ query)
                 for d in distractors)
    assert closer > retriever.config.candidates_per_concept  # by its embedding alone, never a candidate
    [best, *_] = retriever.search("a glowing halo around the shape", k=3)
    assert best.name == "neon" and "quotes its description" in best.reasons
    assert all("quotes its description" not in r.reasons for r in retriever.search("a glowing circle", k=3))
