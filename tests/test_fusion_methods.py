"""Each fusion method's gating semantics, on a small random SD-architecture model."""

import pytest
import torch
import torch.nn.functional as F

from fusion import AdapterSpec, FusionGate, Schedule, compose
from fusion.gate_training import gate_loss
from fusion.methods.b4m import METADATA_ROLE
from fusion.methods.gated import DEFAULT_CURVES
from fusion.methods.klora import balance, style_factor
from fusion.methods.orthogonal import bernoulli_rates, sample_masks
from fusion.testing import random_lora
from library.lora import LoraAdapter, LoraModule

Q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
UP_Q = "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def loras(pipe):
    return [random_lora(pipe.unet, rank, seed, alpha=rank / 2) for seed, rank in enumerate((4, 8, 6))]


def unet_out(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, e = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 24, 384, generator=g)
    with torch.no_grad():
        return pipe.unet(x, torch.tensor(700), encoder_hidden_states=e).sample


def gates_per_step(pipe, session, target, steps):
    seen = []

    def record(p, i, t, kwargs):
        seen.append(session.gates(target))
        return kwargs

    pipe(prompt="a red circle", num_inference_steps=steps, output_type="latent", height=32, width=32,
         callback_on_step_end=record)
    return seen


def test_switch_uses_adapter_i_at_steps_5i_to_5i_plus_5(pipe, loras):
    specs = [AdapterSpec("a", loras[0]), AdapterSpec("b", loras[1])]
    with compose(pipe, specs, "switch") as session:
        seen = gates_per_step(pipe, session, Q, 12)
        layer = session.layers[Q]
    active = [max(g, key=g.get) for g in seen]
    assert active == ["a"] * 5 + ["b"] * 5 + ["a"] * 2
    assert all(sorted(g.values()) == [0.0, 1.0] for g in seen)
    assert layer.down is None  # cleared on detach; during the run only one adapter's ranks were used


def test_switch_multiplies_only_the_active_adapter(pipe, loras):
    with compose(pipe, [AdapterSpec("a", loras[0], 0.7)]) as _:
        only_a = unet_out(pipe)
    with compose(pipe, [AdapterSpec("a", loras[0], 0.7), AdapterSpec("b", loras[1])], "switch") as session:
        session.context.step = 0
        session._advance()
        torch.testing.assert_close(unet_out(pipe), only_a, atol=1e-5, rtol=1e-5)
        assert session.layers[Q]._down_eff.shape[0] == 4


def test_composite_is_the_average_of_single_adapter_runs(pipe, loras):
    specs = [AdapterSpec("a", loras[0], 0.8), AdapterSpec("b", loras[1], 0.6), AdapterSpec("c", loras[2])]
    singles = []
    for spec in specs:
        with compose(pipe, [spec]):
            singles.append(unet_out(pipe))
    with compose(pipe, specs, "composite"):
        composite = unet_out(pipe)
    torch.testing.assert_close(composite, torch.stack(singles).mean(0), atol=1e-5, rtol=1e-5)
    assert "forward" not in pipe.unet.__dict__  # the UNet's own forward is back


def test_orthogonal_masks_are_disjoint_with_the_right_marginals():
    keep = [0.5, 0.3, 0.2]
    masks = sample_masks((200_000,), keep, torch.Generator().manual_seed(0))
    assert int(masks.sum(0).max()) <= 1
    assert torch.allclose(masks.float().mean(1), torch.tensor(keep), atol=5e-3)
    # the paper's sequential Bernoulli construction gives the same marginals
    p = [1 - k for k in keep]
    g = torch.Generator().manual_seed(1)
    free = torch.ones(200_000, dtype=torch.bool)
    for rate, expected in zip(bernoulli_rates(p), keep, strict=True):
        z = torch.rand(200_000, generator=g) < rate
        m = z & free
        free &= ~z
        assert abs(m.float().mean().item() - expected) < 5e-3


def test_orthogonal_layer_gives_each_element_to_at_most_one_adapter(pipe, loras):
    p = [0.6, 0.7]
    specs = [AdapterSpec("a", loras[0], 0.8), AdapterSpec("b", loras[1], 0.5)]
    captured = {}
    with compose(pipe, specs, "orthogonal", p=p, seed=0) as session:
        layer = session.layers[Q]
        handle = layer.register_forward_hook(lambda m, args, out: captured.update(x=args[0], y=out))
        first = unet_out(pipe)
        handle.remove()
        assert torch.equal(first, unet_out(pipe)) is False  # fresh masks every forward
    with compose(pipe, specs, "orthogonal", p=p, seed=0):
        assert torch.equal(first, unet_out(pipe))  # seeded: deterministic
    x, y = captured["x"], captured["y"]
    base = F.linear(x, layer.base.weight, layer.base.bias)
    o = [w * x @ lora.modules[Q].delta().T / (1 - pk) for w, lora, pk in zip((0.8, 0.5), loras[:2], p, strict=True)]
    residual = y - base
    candidates = torch.stack([torch.zeros_like(residual), o[0], o[1]])
    error = (residual - candidates).abs()
    assert bool((error.min(0).values <= 1e-5 + 1e-5 * residual.abs()).all())  # exactly one of 0, o_a, o_b
    clear = (o[0].abs() > 1e-3) & (o[1].abs() > 1e-3) & ((o[0] - o[1]).abs() > 1e-3)
    chosen = error.argmin(0)[clear]
    assert abs((chosen == 1).float().mean().item() - 0.4) < 0.03
    assert abs((chosen == 2).float().mean().item() - 0.3) < 0.03


def test_orthogonal_refuses_rates_that_cannot_be_disjoint(pipe, loras):
    with pytest.raises(ValueError, match="sum"):
        compose(pipe, [loras[0], loras[1]], "orthogonal", p=[0.2, 0.2])


def test_klora_choice_follows_scores_and_schedule(pipe, loras):
    content, style = loras[0], random_lora(pipe.unet, 8, 9, alpha=4, strength=1.5)
    specs = [AdapterSpec("c", content, role="content"), AdapterSpec("s", style, role="style")]
    with compose(pipe, specs, "klora") as session:
        method = session.method
        seen = gates_per_step(pipe, session, Q, 10)
    # independent computation of the scores and gamma
    ratios, scores = [], {}
    for target, c in content.modules.items():
        s = style.modules[target]
        dc, ds = c.delta().abs().flatten(), s.delta().abs().flatten()
        scores[target] = (dc.topk(c.rank * s.rank).values.sum(), ds.topk(c.rank * s.rank).values.sum())
        ratios.append(float(dc.sum() / ds.sum()))
    mean = sum(ratios) / len(ratios)
    kept = [r for r in ratios if r <= 3 * mean]
    assert method.gamma == pytest.approx(sum(kept) / len(kept), rel=1e-5)
    for step, gates in enumerate(seen):
        sc, ss = scores[Q]
        content_wins = bool(sc / method.gamma > ss * style_factor(step / 10))
        assert gates == ({"c": 1.0, "s": 0.0} if content_wins else {"c": 0.0, "s": 1.0})
    assert {tuple(g.values()) for g in seen} == {(1.0, 0.0), (0.0, 1.0)}  # both win somewhere


def test_klora_helpers_and_roles(pipe, loras):
    assert style_factor(0.0) == pytest.approx(1.275) and style_factor(0.15) == pytest.approx(0.0, abs=1e-9)
    assert balance([1.0, 1.0, 1.0, 100.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one content and one style"):
        compose(pipe, [loras[0], loras[1]], "klora")


def test_gated_schedule_follows_role_curves_and_blocks(pipe, loras):
    specs = [
        AdapterSpec("c", loras[0], role="content"),
        AdapterSpec("s", loras[1], role="style"),
        AdapterSpec("o", loras[2], schedule=Schedule.window(0.5, 1.0)),
    ]
    with compose(pipe, specs, "gated", content_curve=[(0, 1), (1, 0)], style_blocks={"up": 0.25}) as session:
        seen = gates_per_step(pipe, session, Q, 4)
        up_layer, down_layer = session.layers[UP_Q], session.layers[Q]
        s_up = loras[1].modules[UP_Q]
        torch.testing.assert_close(up_layer.up[:, 4:12], s_up.up * s_up.scale * 0.25)
        s_down = loras[1].modules[Q]
        torch.testing.assert_close(down_layer.up[:, 4:12], s_down.up * s_down.scale)  # style_blocks: down 1
    style = Schedule.curve(DEFAULT_CURVES["style"])  # the default style curve (not overridden here)
    for step, gates in enumerate(seen):
        p = step / 4
        assert gates["c"] == pytest.approx(1 - p)
        assert gates["s"] == pytest.approx(style(p))
        assert gates["o"] == (1.0 if p >= 0.5 else 0.0)


def test_gated_runs_are_deterministic(pipe, loras):
    specs = [AdapterSpec("c", loras[0], role="content"), AdapterSpec("s", loras[1], role="style")]
    outs = []
    for _ in range(2):
        with compose(pipe, specs, "gated"):
            g = torch.Generator().manual_seed(0)
            outs.append(pipe(prompt="a red circle", num_inference_steps=3, output_type="latent", generator=g,
                             height=32, width=32).images)
    assert torch.equal(outs[0], outs[1])


def test_trained_gate_starts_as_merge_and_round_trips(pipe, loras, tmp_path):
    specs = [AdapterSpec("c", loras[0], 0.8, role="content"), AdapterSpec("s", loras[1], 0.6, role="style")]
    with compose(pipe, specs):
        merged = unet_out(pipe)
    gate = FusionGate.for_unet(pipe.unet)
    with compose(pipe, specs, "gated", gate=gate) as session:
        assert session.layers[Q].split
        torch.testing.assert_close(unet_out(pipe), merged, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    with compose(pipe, specs, "gated", gate=gate):
        trained = unet_out(pipe)
    assert not torch.allclose(trained, merged, atol=1e-3)
    gate.save(tmp_path / "gate")
    with compose(pipe, specs, "gated", gate=tmp_path / "gate"):
        torch.testing.assert_close(unet_out(pipe), trained)
    with pytest.raises(FileNotFoundError, match="no trained fusion gate"):
        compose(pipe, specs, "gated", gate=tmp_path / "missing")


def test_gate_strengths_scale_each_role_like_its_weight_and_round_trip(pipe, loras, tmp_path):
    plain = [AdapterSpec("c", loras[0], 0.8, role="content"), AdapterSpec("s", loras[1], 0.6, role="style")]
    scaled = [AdapterSpec("c", loras[0], 0.8 * 1.25, role="content"),
              AdapterSpec("s", loras[1], 0.6 * 1.5, role="style")]
    gate = FusionGate.for_unet(pipe.unet)  # merge-equivalent: strengths must act exactly like weights
    expected, merged = unet_out_merged(pipe, scaled), unet_out_merged(pipe, plain)
    gate.strengths = {"content": 1.25, "style": 1.5}
    gate.save(tmp_path / "gate")
    with compose(pipe, plain, "gated", gate=tmp_path / "gate") as session:
        torch.testing.assert_close(unet_out(pipe), expected, atol=1e-4, rtol=1e-4)
        assert session.describe()["options"]["strengths"] == {"content": 1.25, "style": 1.5}
    with compose(pipe, plain, "gated", gate=gate, strengths={}):  # an explicit override wins over the gate's own
        torch.testing.assert_close(unet_out(pipe), merged, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="strengths"):
        compose(pipe, plain, "gated", gate=gate, strengths={"content": -1.0})


def unet_out_merged(pipe, specs):
    with compose(pipe, specs):
        return unet_out(pipe)


def test_gate_loss_reaches_the_gate_parameters(pipe, loras):
    gate = FusionGate.for_unet(pipe.unet)
    pipe.unet.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    loss = gate_loss(pipe, gate, loras[0], loras[1], latents, noise, torch.tensor([100, 900]),
                     torch.randn(2, 24, 384, generator=g))
    loss.backward()
    layer = gate.layer(Q)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert layer.w_out.grad is not None and layer.w_out.grad.abs().sum() > 0
    assert layer.w_t.bias.grad is not None and layer.w_t.bias.grad.abs().sum() > 0
    assert "forward" not in pipe.unet.__dict__ and pipe.unet.get_submodule(Q[5:]).__class__.__name__ == "Linear"


def _b4m_pair(pipe, frozen=0.5):
    generator = torch.Generator().manual_seed(4)
    content, style = {}, {}
    for name, module in pipe.unet.named_modules():
        if name.endswith((".to_q", ".to_v")):
            r, n, m = 4, module.in_features, module.out_features
            a = torch.randn(round(frozen * m), r, generator=generator)
            c = torch.randn(r, round(frozen * n), generator=generator)
            content[f"unet.{name}"] = LoraModule(
                down=torch.cat([c, torch.randn(r, n - c.shape[1], generator=generator)], 1),
                up=torch.cat([a, torch.zeros(m - a.shape[0], r)]), alpha=4.0)
            style[f"unet.{name}"] = LoraModule(
                down=torch.cat([c, torch.zeros(r, n - c.shape[1])], 1),
                up=torch.cat([a, torch.randn(m - a.shape[0], r, generator=generator)]), alpha=4.0)
    return (LoraAdapter(content, {METADATA_ROLE: "content"}), LoraAdapter(style, {METADATA_ROLE: "style"}))


def test_b4m_makes_the_composed_adapter(pipe):
    content, style = _b4m_pair(pipe)
    specs = [AdapterSpec("c", content, 1.0, role="content"), AdapterSpec("s", style, 0.5, role="style")]
    with compose(pipe, specs, "b4m") as session:
        assert [e.name for e in session.entries] == ["c+s"] and session.method.options()["mode"] == "make"
        layer = session.layers[Q]
        rows, cols = layer.up.shape[0] // 2, layer.down.shape[1] // 2
        c, s = content.modules[Q], style.modules[Q]
        torch.testing.assert_close(layer.down, torch.cat([c.down[:, :cols], c.down[:, cols:]], 1))
        torch.testing.assert_close(layer.up, torch.cat([s.up[:rows], 0.5 * s.up[rows:]]) * c.scale)


def test_b4m_projects_ordinary_loras(pipe, loras):
    specs = [AdapterSpec("c", loras[0], role="content"), AdapterSpec("s", loras[1], role="style")]
    with compose(pipe, specs, "b4m") as session:
        layer = session.layers[Q]
        content_up, style_up = layer.up[:, :4], layer.up[:, 4:]
        assert (content_up.T @ style_up).abs().max() < 1e-4
        assert session.method.options()["mode"] == "project"
