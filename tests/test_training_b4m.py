"""Break-for-Make: separated subspaces at init, frozen halves stay frozen, make splices the content half."""

import numpy as np
import pytest
import torch

from fusion.methods.b4m import b4m_role, frozen_fraction
from training.b4m import (
    B4MConfig,
    check_pair,
    orthogonal_init,
    splice,
    split_sizes,
    stage_trainer,
    train_break_for_make,
)
from training.lora_trainer import LoraTrainingConfig, TrainingData
from training.testing import random_toy_base

TARGETS = ("attn2.to_k", "attn2.to_v")


@pytest.fixture(scope="module")
def base():
    return random_toy_base(1)


def _data(word: str, seed: int) -> TrainingData:
    pixels = np.random.default_rng(seed).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    return TrainingData(images=pixels, captions=[f"a red {word} on a blue background", f"a {word} on white"])


def _config(steps: int = 2) -> LoraTrainingConfig:
    return LoraTrainingConfig(rank=4, steps=steps, batch_size=2, targets=TARGETS, learning_rate=1e-2, seed=5,
                              checkpoint_every=steps)


def test_initial_subspaces_are_disjoint_and_orthogonal():
    parts = orthogonal_init("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 192, 384, 4, 0.5, seed=0)
    rows, cols = split_sizes(192, 384, 0.5)
    assert parts["A"].shape == (rows, 4) and parts["C"].shape == (4, cols) and parts["D"].shape == (4, 384 - cols)
    assert not parts["B"].any()
    stacked = torch.cat([parts["C"].T, parts["D"].T, parts["A"]]).double()  # disjoint rows of one matrix
    gram = stacked.T @ stacked
    assert torch.allclose(gram, gram[0, 0] * torch.eye(4, dtype=torch.float64), atol=1e-6)
    down_halves = parts["C"].double() @ parts["C"].double().T + parts["D"].double() @ parts["D"].double().T
    assert torch.linalg.matrix_rank(parts["C"]) == 4 and torch.linalg.matrix_rank(parts["D"]) == 4
    assert torch.allclose(down_halves + parts["A"].double().T @ parts["A"].double(), gram, atol=1e-9)
    # a pure function of (seed, module): content and style runs share A and C; another seed does not
    again = orthogonal_init("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 192, 384, 4, 0.5, seed=0)
    assert all(torch.equal(parts[k], again[k]) for k in "ABCD")
    other = orthogonal_init("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 192, 384, 4, 0.5, seed=1)
    assert not torch.allclose(parts["C"], other["C"])


def _frozen(adapter, frozen=0.5):  # type: ignore[no-untyped-def]
    out = {}
    for target, module in adapter.modules.items():
        rows, cols = split_sizes(module.out_features, module.in_features, frozen)
        out[target] = (module.up[:rows].clone(), module.down[:, :cols].clone(), module.up[rows:].clone(),
                       module.down[:, cols:].clone())
    return out


def test_break_trains_only_its_halves_and_make_splices(base):
    config = _config()
    content_trainer = stage_trainer(base.pipe, _data("hartok", 0), config, "content")
    content = content_trainer.train()
    style = stage_trainer(base.pipe, _data("slantor", 1), config, "style").train()
    assert b4m_role(content) == "content" and b4m_role(style) == "style" and frozen_fraction(content) == 0.5
    assert all(".attn2.to_k" in t or ".attn2.to_v" in t for t in content.modules) and len(content.modules) == 14
    for target, (a, c, b, d) in _frozen(content).items():
        name = target.removeprefix("unet.")
        module = content.modules[target]
        init = orthogonal_init(name, module.out_features, module.in_features, 4, 0.5, seed=5)
        assert torch.equal(a, init["A"]) and torch.equal(c, init["C"])  # frozen halves unchanged
        assert not torch.equal(d, init["D"])  # content learns its half of down ...
        assert b.abs().max() < d.sub(init["D"]).abs().max()  # ... while up learns slowly
        s_a, s_c, s_b, s_d = _frozen(style)[target]
        assert torch.equal(s_a, init["A"]) and torch.equal(s_c, init["C"])
        assert s_b.abs().max() > s_d.sub(init["D"]).abs().max()  # style mirrors: up fast, down slow
    check_pair(content, style)
    made = splice(content, style)
    for target, module in made.modules.items():
        rows, cols = split_sizes(module.out_features, module.in_features, 0.5)
        assert torch.equal(module.down[:, cols:], content.modules[target].down[:, cols:])  # content's D
        assert torch.equal(module.down[:, :cols], content.modules[target].down[:, :cols])  # shared C
        assert torch.equal(module.up, style.modules[target].up)  # style's [A; B]
    assert made.metadata["medley.b4m"] == "combined"


def test_make_stage_keeps_the_loaded_halves(base, tmp_path):
    config = B4MConfig(_config(steps=2), make_steps=2)
    stages: list[str] = []
    result = train_break_for_make(base.pipe, _data("hartok", 0), _data("slantor", 1), config, run_dir=tmp_path,
                                  on_stage=stages.append)
    assert stages == ["content", "style", "combined"]
    assert {p.name for p in tmp_path.iterdir()} == {"content", "style", "combined"}
    start = splice(result.content, result.style)
    for target, module in result.combined.modules.items():
        rows, cols = split_sizes(module.out_features, module.in_features, 0.5)
        # A and C are those of the first stage: the make stage did not re-run the orthogonal init
        assert torch.equal(module.up[:rows], start.modules[target].up[:rows])
        assert torch.equal(module.down[:, :cols], start.modules[target].down[:, :cols])
        assert not torch.equal(module.down[:, cols:], start.modules[target].down[:, cols:])  # fine-tuned
    assert result.combined.metadata["medley.b4m"] == "combined"


def test_mismatched_pair_is_refused(base):
    content = stage_trainer(base.pipe, _data("hartok", 0), _config(steps=1), "content").train()
    other_seed = LoraTrainingConfig(rank=4, steps=1, batch_size=2, targets=TARGETS, seed=6)
    style = stage_trainer(base.pipe, _data("slantor", 1), other_seed, "style").train()
    with pytest.raises(ValueError, match="same --seed"):
        splice(content, style)
