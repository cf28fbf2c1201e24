"""The weight encoder's novelty correction (retrieval/embedders/novelty.py) and how it ships."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.embedders.novelty import KNOWN_FILE, Novelty
from retrieval.embedders.weights import WeightEmbedder, WeightEncoder, WeightEncoderConfig, save_weight_encoder


def unit(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_the_folded_inner_product_is_the_corrected_score() -> None:
    known = unit([[1, 0, 0], [0.9, 0.1, 0]])  # the encoder knows the circle-ish direction
    adapters = unit([[1, 0.1, 0], [0.7, 0.7, 0.1]])  # a familiar circle LoRA, a novel one half-way
    query = unit([[0.95, 0.3, 0]])
    novelty = Novelty(known=known, k=2, beta=3.0)
    familiarity = novelty.familiarity(adapters)
    np.testing.assert_allclose(familiarity, (adapters @ known.T).mean(axis=1), rtol=1e-6)
    folded = novelty.query_vectors(query) @ novelty.index_vectors(adapters).T
    np.testing.assert_allclose(folded, query @ adapters.T - 1.5 * familiarity[None, :], rtol=1e-5, atol=1e-6)
    assert np.argmax(query @ adapters.T) == 0  # by cosine alone the familiar one wins
    assert np.argmax(folded) == 1  # the correction lets the one no known description explains win
    centred = Novelty(known=known, k=2, beta=3.0, reference=0.9)
    np.testing.assert_allclose(centred.query_vectors(query) @ centred.index_vectors(adapters).T,
                               folded + 1.5 * 0.9, rtol=1e-5, atol=1e-6)  # a constant shift: the same ranking
    plain = Novelty(known=known, k=1, beta=0.0)
    np.testing.assert_allclose(plain.query_vectors(query) @ plain.index_vectors(adapters).T, query @ adapters.T,
                               atol=1e-6)


def test_bad_settings_are_refused() -> None:
    known = unit([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="k must lie in 1..2"):
        Novelty(known=known, k=3)
    with pytest.raises(ValueError, match="beta"):
        Novelty(known=known, beta=-1.0)
    with pytest.raises(ValueError, match="non-empty"):
        Novelty(known=np.zeros((0, 2), dtype=np.float32))


def test_it_ships_in_the_encoder_folder_and_the_embedder_uses_it(tmp_path) -> None:
    from fusion.testing import random_lora
    from pipeline.toy_base import new_unet

    adapters = [random_lora(new_unet(), 2, seed) for seed in range(2)]
    config = WeightEncoderConfig.from_adapters(adapters, out_dim=8, d_model=16, n_heads=2, n_blocks=1)
    folder = save_weight_encoder(WeightEncoder(config).eval(), tmp_path / "encoder")
    plain = WeightEmbedder(folder=folder)
    assert plain.novelty is None and plain.search_dimension == 8
    Novelty(known=unit([[1] * 8, [1, -1] * 4]), k=1, beta=2.0, reference=0.25).save(folder)
    assert (folder / KNOWN_FILE).is_file()
    corrected = WeightEmbedder(folder=folder)
    assert corrected.novelty is not None
    assert (corrected.novelty.k, corrected.novelty.beta, corrected.novelty.reference) == (1, 2.0, 0.25)
    assert corrected.search_dimension == 9 and corrected.name != plain.name  # another index, not a stale one
    moved = WeightEmbedder(folder=folder, novelty=Novelty(known=corrected.novelty.known, k=1, beta=2.0, reference=0.5))
    other = WeightEmbedder(folder=folder, novelty=Novelty(known=unit([[1] * 8, [1, 1, -1, -1] * 2]), k=1, beta=2.0,
                                                          reference=0.25))
    assert len({corrected.name, moved.name, other.name}) == 3  # reference and known vectors change the index too
    vectors = corrected.index_vectors(adapters)
    assert vectors.shape == (2, 9)
    np.testing.assert_allclose(vectors[:, :8], plain.embed_adapters(adapters), atol=1e-6)
    queries = corrected.query_vectors(unit([[1] * 8]))
    assert queries.shape == (1, 9) and queries[0, 8] == 1.0
