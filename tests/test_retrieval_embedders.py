"""Text embedder (bundled MiniLM), image embedder errors, and the weight encoder (smoke)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from library.lora import LoraAdapter, LoraModule
from retrieval.embedders import EmbedderUnavailableError, TextEmbedder
from retrieval.embedders.base import Embedder, l2_normalise
from retrieval.embedders.hashing import HashingEmbedder
from retrieval.embedders.weights import (
    WeightEmbedder,
    WeightEncoderConfig,
    load_weight_encoder,
    pack_adapters,
    save_weight_encoder,
)
from retrieval.weight_encoder_training import info_nce, train_weight_encoder


def test_text_embedder_minilm() -> None:
    embedder = TextEmbedder()
    assert isinstance(embedder, Embedder)
    assert embedder.name.startswith("st:all-MiniLM-L6-v2:") and embedder.dimension == 384
    vectors = embedder.embed(["a heart shape", "a heart", "diagonal stripes"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder.embed([]).shape == (0, 384)
    assert TextEmbedder().model is embedder.model  # loaded once per process
    with pytest.raises(TypeError):
        embedder.embed("one string")  # type: ignore[arg-type]


def test_text_embedder_missing_folder(tmp_path) -> None:
    with pytest.raises(EmbedderUnavailableError, match="does not exist"):
        TextEmbedder(tmp_path / "nope")


def test_image_embedder_without_weights_says_so(tmp_path, monkeypatch) -> None:
    from retrieval.embedders import image
    from retrieval.embedders.image import ImageEmbedder

    with pytest.raises(EmbedderUnavailableError, match="open_clip_config.json"):
        ImageEmbedder(tmp_path)
    assert ImageEmbedder().dimension == 128  # the shipped toy CLIP (open_clip itself loads only on use)
    monkeypatch.setattr(image, "TOY_CLIP_DIR", tmp_path / "gone")
    with pytest.raises(EmbedderUnavailableError, match="toy-CLIP"):
        ImageEmbedder()


def test_hashing_embedder() -> None:
    embedder = HashingEmbedder(dimension=64)
    vectors = embedder.embed(["red heart", "red heart", "blue"])
    assert vectors.shape == (3, 64)
    np.testing.assert_allclose(vectors[0], vectors[1])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


class WordEmbedder:
    name = "words"
    dimension = 16

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).standard_normal(16)
                for t in texts]
        return l2_normalise(np.stack(rows))


SHAPES = {"unet.down.attn.to_q": (8, 8), "unet.mid.attn.to_k": (12, 6), "unet.up.conv": (4, 6)}


def tiny_lora(seed: int, rank: int) -> LoraAdapter:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for name, (fan_in, fan_out) in SHAPES.items():
        if name.endswith("conv"):
            down, up = torch.randn(rank, fan_in, 3, 3, generator=generator), torch.randn(fan_out, rank, 1, 1,
                                                                                        generator=generator)
        else:
            down, up = torch.randn(rank, fan_in, generator=generator), torch.randn(fan_out, rank, generator=generator)
        modules[name] = LoraModule(down, up, float(rank))
    return LoraAdapter(modules)


def test_weight_encoder_smoke_train_save_load(tmp_path) -> None:
    adapters = [tiny_lora(seed, 2 + seed % 3) for seed in range(8)]
    texts = [f"concept {seed % 4}" for seed in range(8)]
    config = WeightEncoderConfig.from_adapters(adapters, out_dim=16, d_model=32, n_heads=2, n_blocks=1)
    assert [spec.name for spec in config.layers] == sorted(SHAPES)
    assert {s.name: s.in_features for s in config.layers}["unet.up.conv"] == 36
    encoder, report = train_weight_encoder(adapters, texts, WordEmbedder(), config=config, steps=5, batch_size=4,
                                           log=None)
    assert len(report.losses) == 5 and np.isfinite(report.losses).all() and 0 <= report.top1 <= 1
    vectors = encoder.encode(adapters)
    assert vectors.shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # the token sees B A, not the factors: B M, M^-1 A gives the same vector
    first = adapters[0].modules["unet.down.attn.to_q"]
    mix = torch.randn(first.rank, first.rank) + 3 * torch.eye(first.rank)
    refactored = dict(adapters[0].modules)
    refactored["unet.down.attn.to_q"] = LoraModule(torch.linalg.inv(mix) @ first.down, first.up @ mix, first.alpha)
    np.testing.assert_allclose(encoder.encode([LoraAdapter(refactored)])[0], vectors[0], atol=1e-4)

    # an adapter touching a subset of the layers, and one with an unknown layer
    partial = LoraAdapter({"unet.mid.attn.to_k": adapters[1].modules["unet.mid.attn.to_k"],
                           "unet.other": adapters[1].modules["unet.mid.attn.to_k"]})
    assert pack_adapters([partial], config.layers).ignored == [["unet.other"]]
    assert np.isfinite(encoder.encode([partial])).all()

    folder = save_weight_encoder(encoder, tmp_path / "weight-encoder")
    loaded = load_weight_encoder(folder)
    np.testing.assert_allclose(loaded.encode(adapters), vectors, atol=1e-6)
    embedder = WeightEmbedder(loaded)
    assert embedder.dimension == 16 and embedder.text_space == "words" and embedder.name.startswith("weights:")


def test_weight_encoder_missing_assets_say_how(tmp_path) -> None:
    with pytest.raises(EmbedderUnavailableError, match="train_weight_encoder"):
        load_weight_encoder(tmp_path)


def test_info_nce_prefers_matching_pairs() -> None:
    texts = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    groups = torch.arange(4)
    scale = torch.tensor(np.log(10.0))
    assert info_nce(texts, texts, groups, scale) < info_nce(texts.roll(1, 0), texts, groups, scale)
