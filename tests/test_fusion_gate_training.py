"""Training the AutoLoRA-style fusion gate (training/fusion_gate.py) on the random toy-architecture pipeline."""

import json

import pytest
import torch

from fusion import AdapterSpec, FusionGate, compose
from fusion.gate import ALL_TARGETS
from fusion.testing import random_lora
from toyworld.concepts import COMPOSITION_HELDOUT
from toyworld.vocab import novel_concept
from training import fusion_gate as fg

STYLE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2")
UP_CONV = "unet.up_blocks.1.resnets.0.conv1"


def starter(pipe, name, seed):
    concept = novel_concept(name)
    kind = "content" if concept.kind == "content" else "style"
    targets = ("to_q", "to_k", "to_v", "to_out.0") if kind == "content" else STYLE_TARGETS
    adapter = random_lora(pipe.unet, 2, seed, targets, alpha=1.0, strength=0.5, metadata={"medley.kind": kind})
    if kind == "style":  # like the starter styles: resnet convolutions in the up blocks only
        adapter.modules = {t: m for t, m in adapter.modules.items()
                           if ".resnets." not in t or t.startswith("unet.up_blocks.")}
    return fg.StarterAdapter(concept, fg.kind_of(concept, adapter.metadata), adapter)


@pytest.fixture(scope="module")
def starters(pipe):
    names = ["heart", "ring", "grid", "concentric", "sepia", "dusk"]
    return [starter(pipe, name, seed) for seed, name in enumerate(names)]


@pytest.fixture(scope="module")
def data(pipe, starters):
    pairs = fg.training_pairs(starters)
    return fg.build_data(pipe, pairs, scenes=4)


def unet_out(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, e = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 24, 384, generator=g)
    with torch.no_grad():
        return pipe.unet(x, torch.tensor([300, 700]), encoder_hidden_states=e).sample


def test_pairs_leave_out_every_heldout_concept(starters):
    pairs = fg.training_pairs(starters)
    names = {s.name for pair in pairs for s in pair}
    assert names.isdisjoint(COMPOSITION_HELDOUT)
    assert {fg.pair_name(p) for p in pairs} == {"heart+grid", "heart+sepia"}
    assert all(c.kind == "content" and s.kind == "style" for c, s in pairs)
    assert fg.training_pairs(starters, heldout=()) != pairs  # the held-out pairs exist and are dropped
    assert len({fg.pair_seed0(p) for p in fg.training_pairs(starters, heldout=())}) == 2 * 4  # unique per pair


def test_kind_comes_from_metadata_or_the_concept():
    assert fg.kind_of(novel_concept("sepia"), {}) == "style"
    assert fg.kind_of(novel_concept("heart"), {"medley.kind": "content"}) == "content"
    with pytest.raises(ValueError):
        fg.kind_of(novel_concept("heart"), {"medley.kind": "palette"})


def test_precomputed_data_holds_both_triggers(pipe, data):
    assert [d.name for d in data] == ["heart+grid", "heart+sepia"]
    for item in data:
        assert item.latents.shape == (4, 4, 16, 16) and item.embeds.shape[0] == 4
        assert torch.isfinite(item.latents).all() and torch.isfinite(item.embeds).all()
    again = fg.build_data(pipe, [data[0].pair], scenes=4)[0]
    torch.testing.assert_close(again.latents, data[0].latents)  # seeds fixed by the pair


def test_batches_cycle_through_every_pair(data):
    config = fg.GateTrainingConfig(batch=3)
    seen = [fg.make_batch(data, config, step, 1000) for step in range(1, 5)]
    assert sorted(b.data.name for b in seen[:2]) == sorted(d.name for d in data)
    assert sorted(b.data.name for b in seen[2:]) == sorted(d.name for d in data)
    assert all(b.latents.shape[0] == 3 and b.timesteps.shape == (3,) for b in seen)
    again = fg.make_batch(data, config, 3, 1000)
    assert torch.equal(again.noise, seen[2].noise) and torch.equal(again.timesteps, seen[2].timesteps)


def test_gate_covers_convolutions_and_starts_as_the_merge(pipe, starters):
    content, style = starters[0], starters[2]
    gate = fg.new_gate(pipe, [(content, style)], fg.GateTrainingConfig())
    assert UP_CONV in gate and gate.features[UP_CONV] == pipe.unet.get_submodule(UP_CONV[5:]).out_channels
    assert not any(".resnets." in t for t in gate.features if t.startswith("unet.down_blocks."))
    assert set(gate.features) == fg.covered_layers([(content, style)])
    specs = [content.spec(), style.spec()]
    with compose(pipe, specs):
        merged = unet_out(pipe)
    with compose(pipe, specs, "gated", gate=gate) as session:
        assert session.layers[UP_CONV].split and session.layers[UP_CONV].is_conv
        torch.testing.assert_close(unet_out(pipe), merged, atol=1e-4, rtol=1e-4)
    full = FusionGate.for_unet(pipe.unet, ALL_TARGETS)
    assert UP_CONV in full and any(t.endswith(".proj_in") for t in full.features)


def test_a_few_steps_change_the_gate_and_keep_it_finite(pipe, data):
    config = fg.GateTrainingConfig(steps=3, batch=2, lr=2e-2, warmup=1, log_every=2)
    lines = []
    result = fg.train_gate(pipe, data, config, validation=data[:1], log=lines.append)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert any("eta" in line for line in lines) and any("validation" in line for line in lines)
    assert torch.isfinite(torch.tensor([result.validation_before, result.validation_after])).all()
    fresh = fg.new_gate(pipe, [d.pair for d in data], config)
    moved = [(result.gate.state_dict()[k] - v).abs().max() for k, v in fresh.state_dict().items()]
    assert max(moved) > 0
    assert all(torch.isfinite(p).all() for p in result.gate.parameters())
    assert all(not p.requires_grad for p in pipe.unet.parameters())
    assert "forward" not in pipe.unet.__dict__  # every composition detached


def test_training_on_one_batch_lowers_its_loss(pipe, data):
    config = fg.GateTrainingConfig(steps=1, batch=2, lr=5e-2, warmup=1)
    gate = fg.new_gate(pipe, [data[0].pair], config)
    batch = fg.make_batch(data[:1], config, 1, 1000)
    optimiser = torch.optim.AdamW(gate.parameters(), lr=config.lr, weight_decay=0.0)
    with torch.no_grad():
        before = float(fg.batch_loss(pipe, gate, batch))
    for _ in range(4):
        loss = fg.batch_loss(pipe, gate, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = float(fg.batch_loss(pipe, gate, batch))
    assert after < before


def test_saved_gate_loads_back_and_composes(pipe, data, starters, tmp_path):
    config = fg.GateTrainingConfig(steps=2, batch=2, lr=2e-2, warmup=1)
    result = fg.train_gate(pipe, data, config, log=lambda _: None)
    pairs = [d.pair for d in data]
    out = fg.save_gate(result.gate, fg.training_record(config, pairs, [], result), tmp_path / "gate")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "gate.safetensors"]  # no temp files left
    record = json.loads((out / "config.json").read_text())["training"]
    assert record["steps"] == 2 and record["pairs"] == ["heart+grid", "heart+sepia"]
    assert set(record["heldout_concepts"]) == set(COMPOSITION_HELDOUT)
    assert record["final_loss"] == pytest.approx(result.final_loss, abs=1e-5)
    loaded = FusionGate.load(out)
    assert loaded.record["steps"] == 2 and loaded.features == result.gate.features
    for key, value in result.gate.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    specs = [starters[0].spec(), AdapterSpec("grid", starters[2].adapter, role="style")]
    with compose(pipe, specs, "gated", gate=result.gate):
        expected = unet_out(pipe)
    with compose(pipe, specs, "gated", gate=out):
        torch.testing.assert_close(unet_out(pipe), expected)
    with compose(pipe, specs):
        assert not torch.allclose(unet_out(pipe), expected, atol=1e-6)
