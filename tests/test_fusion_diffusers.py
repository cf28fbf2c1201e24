"""Medley's merge equals diffusers' PEFT path (load_lora_weights + set_adapters)."""

import pytest
import torch

from fusion import AdapterSpec, compose
from fusion.testing import diffusers_state_dict, random_lora
from pipeline.toy_base import assemble, new_unet, new_vae

WEIGHTS = [0.8, 0.6, 1.3]
BLOCKS = {"down": 0.5, "mid": 0.0, "up": {"block_1": [0.0, 1.5]}}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    pipe = assemble(new_vae(), new_unet())
    pipe.set_progress_bar_config(disable=True)
    shapes = [(4, 2), (8, 8), (16, 4)]
    loras = [random_lora(pipe.unet, rank, seed, alpha=alpha) for seed, (rank, alpha) in enumerate(shapes)]
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(2, 4, 16, 16, generator=g), torch.tensor(400), torch.randn(2, 24, 384, generator=g))
    return pipe, loras, inputs


def run(pipe, inputs):
    x, t, e = inputs
    with torch.no_grad():
        return pipe.unet(x, t, encoder_hidden_states=e).sample


def diffusers_reference(pipe, loras, inputs, weights):
    names = [f"d{i}" for i in range(len(loras))]
    for name, lora in zip(names, loras, strict=True):
        pipe.load_lora_weights(diffusers_state_dict(lora), adapter_name=name)
    try:
        pipe.set_adapters(names, weights)
        out = run(pipe, inputs)
    finally:
        pipe.unload_lora_weights()
    return out


@pytest.mark.parametrize("static", [False, True])
def test_merge_equals_diffusers_set_adapters(setup, static):
    pipe, loras, inputs = setup
    specs = [AdapterSpec(f"l{i}", lora, w) for i, (lora, w) in enumerate(zip(loras, WEIGHTS, strict=True))]
    with compose(pipe, specs, "merge", static=static):
        ours = run(pipe, inputs)
    theirs = diffusers_reference(pipe, loras, inputs, WEIGHTS)
    assert (ours - run(pipe, inputs)).abs().max() > 1e-2  # the adapters do something
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_block_weights_equal_diffusers_dict_form(setup):
    pipe, loras, inputs = setup
    theirs = diffusers_reference(pipe, loras[:2], inputs, [{"unet": BLOCKS}, 0.7])
    for form in (BLOCKS, {"unet": BLOCKS}):  # a bare UNet dict, or diffusers' per-component form
        specs = [AdapterSpec("a", loras[0], 1.0, block_weights=form), AdapterSpec("b", loras[1], 0.7)]
        with compose(pipe, specs):
            ours = run(pipe, inputs)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
