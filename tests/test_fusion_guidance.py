"""Adapter guidance: per-role gains in the unconditional half of classifier-free guidance."""

import contextlib

import pytest
import torch

from fusion import AdapterSpec, FusionGate, compose
from fusion.guidance import validate_gains
from fusion.spec import ROLES
from fusion.testing import random_lora

FLAT = {"content_curve": None, "style_curve": None}  # no schedule: only the guidance gains act


@pytest.fixture(scope="module")
def loras(pipe):
    return [random_lora(pipe.unet, rank, seed, alpha=rank) for seed, rank in enumerate((4, 8))]


@contextlib.contextmanager
def guided_run(session, rows=2):
    """A run the session is told guides, with ``rows`` rows in each half (as FusionSession.run says it)."""
    session.begin_run([700.0], guided_rows=rows)
    try:
        yield
    finally:
        session.end_run()


def unet_out(pipe, batch=4, seed=0, halves=True):
    """The UNet on a batch laid out as a guided step's: the same latents twice, two prompt halves."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch // 2 if halves else batch, 4, 16, 16, generator=g)
    e = torch.randn(batch, 24, 384, generator=g)
    with torch.no_grad():
        return pipe.unet(torch.cat([x, x]) if halves else x, torch.tensor(700), encoder_hidden_states=e).sample


def specs_of(loras, content=1.0, style=1.0):
    return [AdapterSpec("c", loras[0], content, role="content"), AdapterSpec("s", loras[1], style, role="style")]


@pytest.fixture(scope="module")
def gate(pipe):
    """A trained-looking gate (random parameters), whose layers need each adapter's output."""
    gate = FusionGate.for_unet(pipe.unet)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return gate


@pytest.mark.parametrize("trained", [False, True])
def test_uncond_half_runs_each_role_at_its_gain(pipe, loras, gate, trained):
    options = {"gate": gate, "strengths": {}} if trained else FLAT
    with compose(pipe, specs_of(loras), "gated", uncond={"content": 0.0, "style": 0.5}, **options) as session:
        with guided_run(session):
            guided = unet_out(pipe)
    with compose(pipe, specs_of(loras, content=0.0, style=0.5), "gated", uncond={}, **options):
        uncond_half = unet_out(pipe)[:2]
    with compose(pipe, specs_of(loras), "gated", uncond={}, **options):
        cond_half = unet_out(pipe)[2:]
    torch.testing.assert_close(guided, torch.cat([uncond_half, cond_half]), atol=1e-4, rtol=1e-3)  # batch 2 vs 4 GEMMs
    assert not torch.allclose(guided[:2], unet_out_plain(pipe, loras)[:2], atol=1e-4)  # the gains did act


def unet_out_plain(pipe, loras):
    with compose(pipe, specs_of(loras), "gated", uncond={}, **FLAT):
        return unet_out(pipe)


@pytest.mark.parametrize("halves", [True, False])
def test_without_a_guided_run_the_gains_change_nothing(pipe, loras, halves):
    # a batch laid out as a guided step's, but no run told the session it guides: nothing is sniffed
    with compose(pipe, specs_of(loras), "gated", uncond={"content": 0.0, "style": 0.0}, **FLAT) as session:
        if not halves:  # an unguided run
            session.begin_run([700.0], guided_rows=0)
        guided = unet_out(pipe, halves=halves)
    with compose(pipe, specs_of(loras), "gated", uncond={}, **FLAT):
        plain = unet_out(pipe, halves=halves)
    torch.testing.assert_close(guided, plain)


def test_gains_of_one_are_the_plain_method_and_provenance_records_them(pipe, loras):
    with compose(pipe, specs_of(loras), "gated", uncond={"content": 1.0, "style": 1.0}) as session:
        assert session.describe()["options"].get("uncond") is None
        assert session.uncond_gains is None  # nothing to scale: the layers' fast path is untouched
    with compose(pipe, specs_of(loras), "gated", uncond={"content": 0.0}) as session:
        assert session.describe()["options"]["uncond"] == {"content": 0.0}
        assert session.uncond_gains == [0.0, 1.0]


def test_guided_pipeline_run_is_deterministic_and_differs_from_unguided(pipe, loras):
    def run(uncond):
        with compose(pipe, specs_of(loras), "gated", uncond=uncond) as session:
            g = torch.Generator().manual_seed(0)
            return session.run(prompt="a red circle", num_inference_steps=3, output_type="latent", generator=g,
                               guidance_scale=3.0, height=32, width=32).images

    first, second = run({"content": 0.0, "style": 0.5}), run({"content": 0.0, "style": 0.5})
    assert torch.equal(first, second)
    assert not torch.allclose(first, run({}), atol=1e-4)


def test_gains_are_validated():
    assert validate_gains({"content": 0, "style": 0.5}, ROLES, "x") == {"content": 0.0, "style": 0.5}
    with pytest.raises(ValueError, match="roles"):
        validate_gains({"background": 0.5}, ROLES, "x")
    with pytest.raises(ValueError, match=">= 0"):
        validate_gains({"style": -0.1}, ROLES, "x")
    with pytest.raises(ValueError, match=">= 0"):
        validate_gains({"style": float("nan")}, ROLES, "x")
