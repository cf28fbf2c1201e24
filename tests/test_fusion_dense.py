"""Dense terms in the fused layer: an adapter whose update is a dense delta (LyCORIS full/diff, a high-rank
LoHa/LoKr) composes with every method, and equals the same update given as LoRA factors."""

import pytest
import torch

from fusion import AdapterSpec, compose
from fusion.testing import random_lora
from library.compat import IncompatibleAdapterError
from library.lora import DenseModule, LoraAdapter

EXACT = [("merge", {}), ("merge", {"static": True}), ("switch", {}), ("composite", {}), ("gated", {}),
         ("gated", {"uncond": {"content": 0.0, "style": 0.5}}), ("b4m", {})]
# K-LoRA ranks a layer's content and style by their top r_c x r_s entries (the rank of a dense term is its
# full rank); orthogonal dropout drops rank components, a dense term whole: both compose a dense term, by
# their own rule, so only that they run and act is checked for them
RUNS = [("klora", {}), ("orthogonal", {"p": [0.5, 0.5], "seed": 0})]


def as_dense(adapter: LoraAdapter) -> LoraAdapter:
    """The same updates as dense deltas (what a full/diff file holds)."""
    modules = {target: DenseModule(weight=module.delta(torch.float32), scale=1.0, source_family="full")
               for target, module in adapter.modules.items()}
    return LoraAdapter(modules, metadata=dict(adapter.metadata), source_format="lycoris")


@pytest.fixture(scope="module")
def loras(pipe):
    return [random_lora(pipe.unet, rank, seed, alpha=rank, strength=2.0) for seed, rank in enumerate((4, 8))]


def unet_out(pipe, session=None, rows=0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g)
    e = torch.randn(2, 24, 384, generator=g)
    if session is not None:
        session.begin_run([700.0, 300.0], guided_rows=rows)
    try:
        with torch.no_grad():
            return pipe.unet(torch.cat([x, x]), torch.tensor(700), encoder_hidden_states=e).sample
    finally:
        if session is not None:
            session.end_run()


def run(pipe, adapters, method, options):
    specs = [AdapterSpec("content", adapters[0], 0.8, role="content"),
             AdapterSpec("style", adapters[1], 0.7, role="style")]
    with compose(pipe, specs, method, num_inference_steps=2, **options) as session:
        return unet_out(pipe, session, rows=1)


@pytest.mark.parametrize(("method", "options"), EXACT)
def test_a_dense_term_equals_the_same_update_as_factors(pipe, loras, method, options):
    plain = unet_out(pipe)
    factors = run(pipe, loras, method, options)
    dense_style = run(pipe, [loras[0], as_dense(loras[1])], method, options)
    # W x + D x against W x + B (A x): the same update, summed in another order (float32; outputs of order 1)
    torch.testing.assert_close(dense_style, factors, atol=2e-3, rtol=1e-2)
    assert (factors - plain).abs().max() > 1e-3  # the adapters acted
    if method != "b4m":  # b4m projects the style off the content's low-rank subspace: a dense content has none
        both_dense = run(pipe, [as_dense(a) for a in loras], method, options)
        torch.testing.assert_close(both_dense, factors, atol=2e-3, rtol=1e-2)
    torch.testing.assert_close(unet_out(pipe), plain)  # the base is back


@pytest.mark.parametrize(("method", "options"), RUNS)
def test_methods_with_their_own_rule_compose_dense_terms(pipe, loras, method, options):
    plain = unet_out(pipe)
    mixed = run(pipe, [loras[0], as_dense(loras[1])], method, options)
    assert torch.isfinite(mixed).all() and (mixed - plain).abs().max() > 1e-3
    torch.testing.assert_close(unet_out(pipe), plain)


def test_b4m_refuses_a_dense_content_with_the_reason(pipe, loras):
    specs = [AdapterSpec("content", as_dense(loras[0]), role="content"), AdapterSpec("style", loras[1], role="style")]
    with pytest.raises(ValueError, match="dense full update"):
        compose(pipe, specs, "b4m")


def test_a_dense_delta_of_the_wrong_shape_is_refused_before_anything_changes(pipe, loras):
    target = sorted(loras[0].modules)[0]
    wrong = DenseModule(weight=torch.zeros(3, 5), source_family="full")
    bad = LoraAdapter({**as_dense(loras[0]).modules, target: wrong})
    plain = unet_out(pipe)
    with pytest.raises((IncompatibleAdapterError, ValueError)):
        compose(pipe, [AdapterSpec("bad", bad)])
    torch.testing.assert_close(unet_out(pipe), plain)
