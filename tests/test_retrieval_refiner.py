"""Descriptions built from metadata, and the zero-shot preview-tag hook."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from library.records import AdapterRecord
from retrieval.embedders.base import l2_normalise
from retrieval.preview_tags import zero_shot_tags
from retrieval.refiner import describe, description_hash, training_tags


def make_record(**changes) -> AdapterRecord:
    base = dict(
        id=7, sha256="ab" * 32, name="watercolor_v2", title="Soft Watercolor", path="/x.safetensors", format="kohya",
        base="sd1", rank=16, triggers=["wtrclr", "watercolor"], tags=["painting", "Watercolor", "art"],
        description="<p>Gentle <b>watercolour</b> washes &amp; paper texture.</p>", kind="style",
        notes="Works best at 0.6.",
    )
    base.update(changes)
    return AdapterRecord(**base)  # type: ignore[arg-type]


def test_describe_is_deterministic_and_complete() -> None:
    metadata = {"ss_tag_frequency": json.dumps({"10_wtrclr": {"wtrclr": 40, "flower": 12, "landscape": 12, "cat": 3},
                                                "5_extra": {"flower": 2}})}
    civitai = {"trainedWords": ["wtrclr", "aquarelle"], "description": "Made for <i>SD 1.5</i>.",
               "model": {"name": "Watercolor", "description": "Soft paint."}}
    text = describe(make_record(), metadata=metadata, civitai=civitai, extra_tags=["painting", "pastel"])
    assert text == describe(make_record(), metadata=metadata, civitai=civitai, extra_tags=["painting", "pastel"])
    assert text.startswith("Soft Watercolor (watercolor v2): style adapter.")
    assert "Gentle watercolour washes & paper texture." in text and "<" not in text
    assert "Made for SD 1.5. Soft paint" in text
    assert "trigger words: wtrclr, watercolor, aquarelle" in text
    assert "tags: painting, Watercolor, art" in text  # "Watercolor" once (case-insensitive)
    assert "trained on: flower, landscape, cat" in text  # by frequency, triggers not repeated
    assert "Works best at 0.6." in text and "looks like: pastel" in text
    assert description_hash(text) == description_hash(describe(make_record(), metadata=metadata, civitai=civitai,
                                                                extra_tags=["painting", "pastel"]))


def test_describe_minimal_record_and_length_cap() -> None:
    bare = make_record(title="", triggers=[], tags=[], description="", notes="", kind="other")
    assert describe(bare) == "watercolor v2: adapter."
    long = describe(make_record(description="word " * 1000), max_chars=300)
    assert len(long) <= 300 and long.endswith("…")


def test_training_tags_tolerates_bad_metadata() -> None:
    assert training_tags(None) == [] and training_tags({"ss_tag_frequency": "not json"}) == []
    assert training_tags({"ss_tag_frequency": json.dumps({"a": {"x": "many", "y": 2}})}) == ["y"]


class FakeClip:
    """Images are colour names; a text 'a picture of red' lands next to the image 'red'."""

    def _vector(self, word: str) -> np.ndarray:
        return np.random.default_rng(sum(map(ord, word))).standard_normal(8)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(np.stack([self._vector(t.split()[-1]) for t in texts]))

    def embed_images(self, images: Sequence[object]) -> np.ndarray:
        return l2_normalise(np.stack([self._vector(str(i)) for i in images]))


def test_zero_shot_tags_hook() -> None:
    labels = ["red", "blue", "green", "yellow"]
    assert zero_shot_tags(["blue", "blue"], FakeClip(), labels, top_k=1) == ["blue"]
    assert zero_shot_tags([], FakeClip(), labels) == [] and zero_shot_tags(["red"], FakeClip(), []) == []
    tags = zero_shot_tags(["red"], FakeClip(), labels, top_k=4)
    assert tags[0] == "red" and len(tags) <= 4
