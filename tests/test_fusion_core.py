"""Fusion core: stacked layers, exact restore, refusal, swaps, the timestep context."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from fusion import AdapterSpec, compose
from fusion.layer import FusedLayer
from fusion.testing import random_lora
from library.compat import IncompatibleAdapterError
from library.lora import LoraAdapter, LoraModule

Q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
K2 = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"


def unet_inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 16, 16, generator=g), torch.tensor(500), torch.randn(batch, 24, 384, generator=g)


def unet_out(pipe, seed=0):
    x, t, e = unet_inputs(seed=seed)
    with torch.no_grad():
        return pipe.unet(x, t, encoder_hidden_states=e).sample


def snapshot(pipe):
    return {name: p.detach().clone() for name, p in pipe.unet.state_dict().items()}, {
        name: id(m) for name, m in pipe.unet.named_modules()
    }


def test_stacked_layer_is_base_plus_scaled_updates(pipe):
    a, b = random_lora(pipe.unet, 4, 1, alpha=2.0), random_lora(pipe.unet, 8, 2, alpha=16.0)
    base = pipe.unet.get_submodule(Q)
    x = torch.randn(2, 64, base.in_features)
    with compose(pipe, [AdapterSpec("a", a, 0.8), AdapterSpec("b", b, 0.6)]) as session:
        layer = pipe.unet.get_submodule(Q)
        assert isinstance(layer, FusedLayer) and layer.base is base
        assert layer.down.shape == (12, base.in_features) and layer.up.shape == (base.out_features, 12)
        with torch.no_grad():
            got = layer(x)
        ma, mb = a.modules["unet." + Q], b.modules["unet." + Q]
        expected = F.linear(x, base.weight, base.bias) + 0.8 * x @ ma.delta().T + 0.6 * x @ mb.delta().T
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert session.gates("unet." + Q) == {"a": 1.0, "b": 1.0}
        # the wrapper shows the original names and tensors
        state = pipe.unet.state_dict()
        assert pipe.unet.get_parameter(f"{Q}.weight") is base.weight
        assert not any(".base." in name for name in state)
        assert sum(1 for _ in pipe.unet.parameters()) == len(list(pipe.unet.state_dict()))
    assert pipe.unet.get_submodule(Q) is base


def test_conv_lora_is_stacked_conv_then_1x1(pipe):
    target = "down_blocks.1.resnets.0.conv1"
    a = random_lora(pipe.unet, 4, 3, targets=("conv1",))
    b = random_lora(pipe.unet, 2, 4, targets=("conv1",))
    conv = pipe.unet.get_submodule(target)
    x = torch.randn(1, conv.in_channels, 8, 8)
    with compose(pipe, [AdapterSpec("a", a, 0.5), AdapterSpec("b", b, 1.5)]):
        with torch.no_grad():
            got = pipe.unet.get_submodule(target)(x)
    delta = 0.5 * a.modules["unet." + target].delta() + 1.5 * b.modules["unet." + target].delta()
    expected = F.conv2d(x, conv.weight + delta, conv.bias, conv.stride, conv.padding)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("static", [False, True])
def test_hundred_attach_detach_cycles_leave_base_bitwise_identical(pipe, static):
    weights, modules = snapshot(pipe)
    before = unet_out(pipe)
    adapters = [random_lora(pipe.unet, 4, seed) for seed in range(3)]
    for cycle in range(100):
        specs = [AdapterSpec(f"l{i}", adapter, 0.3 + 0.1 * i) for i, adapter in enumerate(adapters)]
        session = compose(pipe, specs[: 1 + cycle % 3], "merge", static=static)
        session.detach()
    after_weights, after_modules = snapshot(pipe)
    assert after_modules == modules
    assert all(torch.equal(weights[name], after_weights[name]) for name in weights)
    assert torch.equal(unet_out(pipe), before)
    assert not pipe.unet._forward_pre_hooks


def test_incompatible_adapter_is_refused_before_anything_changes(pipe):
    good = random_lora(pipe.unet, 4, 0)
    wrong = dict(good.modules)
    wrong["unet." + K2] = LoraModule(down=torch.randn(4, 768), up=torch.randn(128, 4), alpha=4.0)  # SD1.5 width
    bad = LoraAdapter(wrong)
    weights, modules = snapshot(pipe)
    for method in ("merge", "gated"):
        with pytest.raises(IncompatibleAdapterError, match="attn2.to_k"):
            compose(pipe, [AdapterSpec("good", good), AdapterSpec("bad", bad)], method)
    with pytest.raises(IncompatibleAdapterError, match="does not exist"):
        compose(pipe, [LoraAdapter({"unet.no.such.module": good.modules["unet." + Q]})])
    after_weights, after_modules = snapshot(pipe)
    assert after_modules == modules and all(torch.equal(weights[n], after_weights[n]) for n in weights)
    assert not pipe.unet._forward_pre_hooks
    with compose(pipe, [good]):  # and the model is free for the next session
        pass


def test_swap_reuses_wrappers_and_a_refused_swap_keeps_the_current_set(pipe):
    a, b = random_lora(pipe.unet, 4, 0), random_lora(pipe.unet, 8, 1)
    with compose(pipe, [AdapterSpec("a", a)]) as session:
        layer = pipe.unet.get_submodule(Q)
        out_a = unet_out(pipe)
        session.swap([AdapterSpec("b", b)])
        assert pipe.unet.get_submodule(Q) is layer and layer.down.shape[0] == 8
        bad = LoraAdapter({"unet." + Q: LoraModule(torch.randn(2, 3), torch.randn(3, 2), 2.0)})
        with pytest.raises(IncompatibleAdapterError):
            session.swap([AdapterSpec("bad", bad)])
        assert [s.name for s in session.specs] == ["b"] and pipe.unet.get_submodule(Q) is layer
        session.swap([AdapterSpec("a", a)])
        assert torch.equal(unet_out(pipe), out_a)


def test_only_one_session_per_model(pipe):
    a = random_lora(pipe.unet, 4, 0)
    with compose(pipe, [a]):
        with pytest.raises(RuntimeError, match="another fusion session"):
            compose(pipe, [a])


def test_attention_processors_can_change_during_a_session(pipe):
    a = random_lora(pipe.unet, 4, 0)
    with compose(pipe, [AdapterSpec("a", a)]):
        sdpa = unet_out(pipe)
        pipe.unet.set_attn_processor(AttnProcessor())
        classic = unet_out(pipe)
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    torch.testing.assert_close(sdpa, classic, atol=1e-4, rtol=1e-4)
    assert not torch.equal(sdpa, unet_out(pipe))


def test_text_encoder_adapter_and_component_weights(pipe):
    te = random_lora(pipe.text_encoder, 4, 5, targets=("query", "value"), component="text_encoder")
    unet = random_lora(pipe.unet, 4, 6)
    adapter = LoraAdapter({**te.modules, **unet.modules})
    ids = pipe.tokenizer(["a red circle"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = pipe.text_encoder(ids)[0]
        with compose(pipe, [AdapterSpec("x", adapter, 1.0, te_weight=0.0)]):
            off = pipe.text_encoder(ids)[0]
        with compose(pipe, [AdapterSpec("x", adapter, 1.0, te_weight=1.0, unet_weight=0.0)]) as session:
            on = pipe.text_encoder(ids)[0]
            assert not any(t.startswith("unet.") for t in session.layers)
    assert torch.equal(plain, off) and not torch.allclose(plain, on)


def test_block_weights_scale_each_block(pipe):
    a = random_lora(pipe.unet, 4, 0)
    up = "up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    with compose(pipe, [AdapterSpec("a", a, 1.0, block_weights={"down": 0.0, "up": {"block_0": [0.5, 2.0]}})]) as s:
        assert "unet." + Q not in s.layers  # a zero weight stacks nothing
        layer = s.layers["unet." + up]
        expected = a.modules["unet." + up].up * a.modules["unet." + up].scale * 0.5
        torch.testing.assert_close(layer.up, expected)


def test_timestep_context_follows_the_scheduler(pipe):
    a, b = random_lora(pipe.unet, 4, 0), random_lora(pipe.unet, 4, 1)
    seen = []
    with compose(pipe, [AdapterSpec("a", a), AdapterSpec("b", b)], "switch", tau=2) as session:

        def record(p, i, t, kwargs):
            seen.append((i, session.context.step, round(session.context.fraction, 3)))
            return kwargs

        pipe(prompt="a red circle", num_inference_steps=4, output_type="latent", height=32, width=32,
             callback_on_step_end=record)
        assert session.describe()["method"] == "switch"
    assert seen == [(0, 0, 0.0), (1, 1, 0.25), (2, 2, 0.5), (3, 3, 0.75)]


def test_an_adapter_edited_in_place_is_checked_again(pipe):
    adapter = random_lora(pipe.unet, 4, 7)
    with compose(pipe, [adapter]):
        pass
    adapter.modules["unet." + Q].up[0, 0] = float("nan")
    with pytest.raises(IncompatibleAdapterError, match="NaN"):
        compose(pipe, [adapter])


def test_provenance_and_static_merge_limits(pipe):
    a = random_lora(pipe.unet, 4, 0)
    spec = AdapterSpec("a", a, 0.8, role="content", te_weight=0.5, schedule="0.25-0.75")
    with compose(pipe, [spec], "gated", num_inference_steps=10) as session:
        record = session.describe()
    assert record["method"] == "gated" and record["num_inference_steps"] == 10
    assert record["adapters"] == [
        {"name": "a", "weight": 0.8, "role": "content", "te_weight": 0.5, "schedule": "0.25-0.75"}
    ]
    assert session.description == "gated[a:0.8 (content)]"
    with pytest.raises(ValueError, match="static merge"):
        compose(pipe, [spec], "merge", static=True)
    with pytest.raises(ValueError, match="unknown fusion method"):
        compose(pipe, [spec], "average")
