"""Every adapter family through the fusion engine: trainer-built LyCORIS files (LoCon, Tucker, LoHa, LoKr,
full diff, DoRA, (IA)^3, norm) composed by Medley equal the trainer's own forward, and every method takes them."""

import pytest
import test_adapter_families as families  # the trainer-built cases and their toy model, shared
import torch

from fusion import AdapterSpec, compose
from fusion.testing import random_lora
from library.formats import read_adapter

LYCORIS_CASES, _outputs = families.LYCORIS_CASES, families._outputs
toy = families.toy  # the module's fixture, used here too

METHODS = [("merge", {}), ("merge", {"static": True}), ("switch", {}), ("composite", {}), ("klora", {}),
           ("gated", {}), ("orthogonal", {"p": [0.5, 0.5], "seed": 0}), ("b4m", {})]


@pytest.fixture(scope="module")
def built(toy, tmp_path_factory):
    """{case: (adapter as Medley reads the trainer's file, the trainer's own outputs)}."""
    folder = tmp_path_factory.mktemp("families")
    out = {}
    for case in sorted(LYCORIS_CASES):
        path = folder / f"{case}.safetensors"
        _, _, reference = families.trainer_file(toy, case, path)
        out[case] = (read_adapter(path), reference)
    return out


@pytest.mark.parametrize("case", sorted(LYCORIS_CASES))
@pytest.mark.parametrize("static", [False, True])
def test_composed_family_equals_the_trainers_forward(toy, built, case, static):
    unet, encoder, inputs, _ = toy
    adapter, reference = built[case]
    plain = _outputs(unet, encoder, inputs)
    with compose(_Pipe(unet, encoder), [adapter], "merge", static=static):
        ours = _outputs(unet, encoder, inputs)
    worst = max((a - b).abs().max().item() for a, b in zip(ours, reference, strict=True))
    assert worst < 1e-4, (case, worst)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(unet, encoder, inputs), plain, strict=True))  # restored


@pytest.mark.parametrize("case", sorted(LYCORIS_CASES))
def test_every_method_composes_the_family_beside_a_lora(toy, built, case):
    unet, encoder, inputs, _ = toy
    adapter, _ = built[case]
    content = random_lora(unet, 4, 7, alpha=4)
    plain = _outputs(unet, encoder, inputs)
    for method, options in METHODS:
        specs = [AdapterSpec("content", content, 0.8, role="content"), AdapterSpec("style", adapter, 0.8, role="style")]
        if method == "b4m" and case.startswith(("dora", "ia3")):  # refused, with the reason
            with pytest.raises(ValueError, match="depends on the base weight"):
                compose(_Pipe(unet, encoder), specs, method)
            continue
        with compose(_Pipe(unet, encoder), specs, method, num_inference_steps=4, **options):
            sample, _ = _outputs(unet, encoder, inputs)
        assert torch.isfinite(sample).all(), (case, method)
        assert all(torch.equal(a, b) for a, b in zip(_outputs(unet, encoder, inputs), plain, strict=True))


class _Pipe:
    """What compose() reads of a pipeline: its unet and text_encoder."""

    def __init__(self, unet, encoder):
        self.unet, self.text_encoder = unet, encoder
