"""Every adapter family, written by its trainer's own code on a small model, read back by Medley.

LyCORIS (``lycoris.kohya.create_network``, the network kohya's sd-scripts loads as ``lycoris.kohya``)
trains LoRA/LoCon, LoCon with a Tucker core, LoHa (plain and Tucker), LoKr (w1 full, both sides
factorised, a Tucker core, full matrices), full diffs with bias, DoRA (``dora_wd``, per output and per
input channel, on LoRA and LoHa), (IA)^3 and norm updates on the toy UNet and its BERT text encoder; PEFT
trains DoRA (``use_dora``), LoHa and (IA)^3. Each file is read by Medley, and each module's update must
equal the trainer's own (its forward's rebuilt weight, or PEFT's merge) and the network's outputs with
the trainer's layers must equal the base with Medley's deltas merged (max abs diff < 1e-4; measured: about
1e-8 per weight, 1e-6 on the outputs).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from library.families.norm import NormModule
from library.families.on_base import NeedsBaseWeightError, OnBaseModule
from library.formats import plan_file, read_adapter
from library.lora import LoraAdapter

TOLERANCE = 1e-4
# a few modules of every kind (linear, 1x1 and 3x3 conv, LayerNorm, GroupNorm) keep the test fast
TOY_MODULES = ("conv_in", "down_blocks.1.resnets.0.conv1", "down_blocks.1.resnets.0.norm1",
               "down_blocks.1.resnets.0.time_emb_proj", "down_blocks.1.attentions.0.proj_in",
               "down_blocks.1.attentions.0.transformer_blocks.0.norm1",
               "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
               "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
               "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2")
PRESET = f"""enable_conv = true
unet_target_module = []
unet_target_name = [{", ".join(f'"{name}"' for name in TOY_MODULES)}]
text_encoder_target_module = ["BertLayer"]
text_encoder_target_name = []
"""
# id -> (LyCORIS algo, network kwargs, parameters the file must hold, the plan's family label)
LYCORIS_CASES: dict[str, tuple[str, dict[str, object], set[str], str]] = {
    "lora-locon": ("locon", {}, {"lora_down.weight", "lora_up.weight", "alpha"}, "lora"),
    "locon-tucker": ("locon", {"use_tucker": True}, {"lora_mid.weight"}, "locon+lora"),
    "loha": ("loha", {}, {"hada_w1_a", "hada_w2_b"}, "loha"),
    "loha-tucker": ("loha", {"use_tucker": True}, {"hada_t1", "hada_t2"}, "loha"),
    "lokr": ("lokr", {}, {"lokr_w1", "lokr_w2_a", "lokr_w2_b"}, "lokr"),
    "lokr-both": ("lokr", {"decompose_both": True}, {"lokr_w1_a", "lokr_w1_b"}, "lokr"),
    "lokr-tucker": ("lokr", {"use_tucker": True}, {"lokr_t2"}, "lokr"),
    "lokr-full": ("lokr", {"full_matrix": True}, {"lokr_w1", "lokr_w2"}, "lokr"),
    "full": ("full", {}, {"diff", "diff_b"}, "full"),
    "dora": ("locon", {"dora_wd": True}, {"dora_scale"}, "dora"),
    "dora-on-inputs": ("locon", {"dora_wd": True, "wd_on_output": False}, {"dora_scale"}, "dora"),
    "dora-loha": ("loha", {"dora_wd": True}, {"dora_scale", "hada_w1_a"}, "dora"),
    "ia3": ("ia3", {}, {"weight", "on_input"}, "ia3"),
    "norm": ("locon", {"train_norm": True}, {"w_norm", "b_norm"}, "lora+norm"),
}
FIGURES: dict[str, tuple[float, float]] = {}  # case -> (worst weight diff, worst output diff), printed at the end


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy UNet and its BERT text encoder with random weights, inputs for both, a LyCORIS preset."""
    from diffusers import UNet2DConditionModel
    from transformers import BertConfig, BertModel

    from library.layouts.configs import TOY_TEXT_ENCODER, TOY_UNET

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(dict(TOY_UNET)).eval()
    encoder = BertModel(BertConfig(**{**TOY_TEXT_ENCODER[1], "num_hidden_layers": 1}), add_pooling_layer=False).eval()
    generator = torch.Generator().manual_seed(2)
    inputs = {"sample": torch.randn(1, 4, 16, 16, generator=generator), "timestep": torch.tensor([500]),
              "states": torch.randn(1, 8, 384, generator=generator), "ids": torch.tensor([[101, 2417, 4418, 102]])}
    preset = tmp_path_factory.mktemp("lycoris") / "preset.toml"
    preset.write_text(PRESET)
    return unet, encoder, inputs, preset


def _outputs(unet: nn.Module, encoder: nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        sample = unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["states"]).sample
        return sample, encoder(inputs["ids"]).last_hidden_state


def merge(adapter: LoraAdapter, components: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """Copies of ``components`` with every module's update merged, the way the fusion engine applies each type:
    factors()/delta() as a weight update, OnBaseModule.delta_on(original W), norm and bias updates."""
    merged = {name: copy.deepcopy(model) for name, model in components.items()}
    with torch.no_grad():
        for target, module in adapter.modules.items():
            component, _, path = target.partition(".")
            layer = merged[component].get_submodule(path)
            if isinstance(module, OnBaseModule):
                original = layer.weight.detach().clone()
                bias = module.bias_delta_on(layer.bias) if layer.bias is not None else None
                layer.weight += module.delta_on(original)
            else:
                layer.weight += module.delta().reshape(layer.weight.shape)
                bias = module.bias_delta() if hasattr(module, "bias_delta") else None
            if bias is not None:
                layer.bias += bias
    return merged


def _trainer_delta(lora: nn.Module) -> torch.Tensor:
    """The update the LyCORIS module's own forward applies (its rebuild, at multiplier 1)."""
    kind = type(lora).__name__
    with torch.no_grad():
        if kind == "FullModule":
            return lora.custom_state_dict()["diff"]
        if kind == "IA3Module":
            return lora.get_diff_weight()[0]
        if kind == "NormModule":
            return lora.w_norm.detach().clone()
        base = lora.org_weight
        diff = lora.make_weight() * lora.scale if kind == "LoConModule" else lora.get_weight(lora.shape)
        diff = diff.reshape(base.shape)
        if lora.wd:
            diff = lora.apply_weight_decompose(base + diff, 1) - base
        return diff


def _randomise(loras: list[nn.Module], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in loras:
            for name, parameter in lora.named_parameters(recurse=True):
                if name.startswith("org_module"):
                    continue
                noise = torch.randn(parameter.shape, generator=generator)
                if "dora_scale" in name:
                    parameter.mul_(1 + 0.1 * noise)
                else:
                    parameter.copy_(noise * 0.1)


def _targets_by_lycoris_name(path: Path) -> dict[str, str]:
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
    return {prefixes[m.component or "unet"] + m.name: target for target, m in plan_file(path).modules.items()}


def trainer_file(toy, case: str, path: Path):  # type: ignore[no-untyped-def]
    """Train-shaped LyCORIS weights of ``case`` written by the trainer's own network to ``path``: returns
    {lora name: (its delta, its module)}, {lora name: original weight} and the outputs with it applied."""
    from lycoris.kohya import create_network

    unet, encoder, inputs, preset = toy
    algo, options, _, _ = LYCORIS_CASES[case]
    network = create_network(1.0, 4, 2.0, None, encoder, unet, algo=algo, conv_dim=4, conv_alpha=1.0,
                             preset=str(preset), warn_on_unmatched=False, **options)
    _randomise(network.loras, seed=len(case))
    network.apply_to(encoder, unet, True, True)
    try:
        expected = {lora.lora_name: (_trainer_delta(lora), lora) for lora in network.loras}
        originals = {name: lora.org_module[0].weight.detach().clone() if type(lora).__name__ != "FullModule"
                     else lora.org_weight.clone() for name, (_, lora) in expected.items()}
        reference = _outputs(unet, encoder, inputs)
        network.save_weights(str(path), torch.float32, {"ss_network_module": "lycoris.kohya"})
    finally:
        for lora in network.loras:
            lora.restore()
    return expected, originals, reference


@pytest.mark.parametrize("case", sorted(LYCORIS_CASES))
def test_lycoris_family_matches_its_trainer(toy, tmp_path, case):
    unet, encoder, inputs, _ = toy
    _, _, parameters, family = LYCORIS_CASES[case]
    path = tmp_path / f"{case}.safetensors"
    expected, originals, reference = trainer_file(toy, case, path)
    with safe_open(str(path), "pt") as handle:
        suffixes = {key.split(".", 1)[1] for key in handle.keys()}
    assert parameters <= suffixes, f"{case}: the trainer wrote {sorted(suffixes)}"

    plan = plan_file(path)
    assert plan.family == family and plan.format == "kohya"
    adapter = read_adapter(path)
    targets = _targets_by_lycoris_name(path)
    assert set(targets) == set(expected)
    worst = 0.0
    for name, (theirs, _lora) in expected.items():
        module = adapter.modules[targets[name]]
        if isinstance(module, OnBaseModule):
            with pytest.raises(NeedsBaseWeightError):
                module.delta()
            ours = module.delta_on(originals[name])
        else:
            ours = module.delta()
        worst = max(worst, (ours.reshape(theirs.shape) - theirs).abs().max().item())
        factors = module.factors()
        if factors is not None:  # exact: the stacked factors give the same update
            down, up, scale = factors
            stacked = torch.einsum("or,rihw->oihw", up.flatten(1), down) if down.dim() == 4 else up @ down
            worst = max(worst, (stacked.reshape(theirs.shape) * scale - theirs).abs().max().item())
    merged = merge(adapter, {"unet": unet, "text_encoder": encoder})
    ours_out = _outputs(merged["unet"], merged["text_encoder"], inputs)
    output_diff = max((a - b).abs().max().item() for a, b in zip(ours_out, reference, strict=True))
    FIGURES[case] = (worst, output_diff)
    assert worst < TOLERANCE and output_diff < TOLERANCE, (case, worst, output_diff)
    assert any(not isinstance(m, NormModule) and m.factors() is not None for m in adapter.modules.values()) or \
        family in ("full", "dora", "ia3", "lokr")  # low-rank families stack at least somewhere


def test_dense_and_low_rank_forms_follow_the_stated_rule(toy, tmp_path):
    """LoKr full matrices on the toy's 64-channel layers: rank 64 > 64 / 2, a dense term; small ranks stack."""
    from lycoris.kohya import create_network

    unet, encoder, _, preset = toy
    network = create_network(1.0, 4, 4.0, None, None, unet, algo="lokr", full_matrix=True, preset=str(preset),
                             warn_on_unmatched=False)
    _randomise(network.loras, seed=3)
    network.apply_to(None, unet, False, True)
    try:
        network.save_weights(str(tmp_path / "full.safetensors"), torch.float32, {})
    finally:
        for lora in network.loras:
            lora.restore()
    adapter = read_adapter(tmp_path / "full.safetensors")
    for module in adapter.modules.values():
        out, flat_in = module.weight_shape[0], int(torch.tensor(module.weight_shape[1:]).prod())
        assert (module.factors() is not None) == (2 * module.exact_rank <= min(out, flat_in))
        assert module.rank == (module.exact_rank if module.low_rank else min(out, flat_in))


def _peft_file(toy, tmp_path: Path, config, name: str) -> tuple[Path, nn.Module, nn.Module]:
    """(file, the base UNet, PEFT's UNet with the trained adapter merged) for a PEFT config on the toy UNet."""
    from peft import get_peft_model

    unet = toy[0]
    model = get_peft_model(copy.deepcopy(unet), config)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if "lora_magnitude_vector" in parameter_name:
                parameter.mul_(1 + 0.1 * noise)
            elif any(part in parameter_name for part in ("lora_", "hada_", "ia3_")):
                parameter.copy_(1 + 0.1 * noise if "ia3_" in parameter_name else noise * 0.1)
    model.save_pretrained(str(tmp_path / name), safe_serialization=True)
    merged = model.merge_and_unload()
    return tmp_path / name / "adapter_model.safetensors", unet, merged


@pytest.mark.parametrize("kind", ["dora", "loha", "ia3"])
def test_peft_family_matches_peft_merge(toy, tmp_path, kind):
    from peft import IA3Config, LoHaConfig, LoraConfig

    block = "down_blocks.1.attentions.0.transformer_blocks.0"
    linear = [f"{block}.attn1.to_q", f"{block}.attn2.to_k", f"{block}.ff.net.2",
              "down_blocks.1.resnets.0.time_emb_proj"]
    conv = ["down_blocks.1.resnets.0.conv1", "conv_in"]
    config = {
        "dora": LoraConfig(r=4, lora_alpha=2, target_modules=[*linear, *conv], use_dora=True),
        "loha": LoHaConfig(r=4, alpha=2, target_modules=[*linear, *conv]),
        "ia3": IA3Config(target_modules=linear, feedforward_modules=[f"{block}.ff.net.2"]),
    }[kind]
    path, unet, merged = _peft_file(toy, tmp_path, config, kind)
    plan = plan_file(path)
    assert plan.format == "peft" and plan.family == kind
    adapter = read_adapter(path)
    assert adapter.modules
    inputs = toy[2]
    worst = 0.0
    for target, module in adapter.modules.items():
        path_in_unet = target.partition(".")[2]
        base, theirs = unet.get_submodule(path_in_unet), merged.get_submodule(path_in_unet)
        expected = theirs.weight.detach() - base.weight.detach()
        ours = module.delta_on(base.weight.detach()) if isinstance(module, OnBaseModule) else module.delta()
        worst = max(worst, (ours.reshape(expected.shape) - expected).abs().max().item())
        if isinstance(module, OnBaseModule) and base.bias is not None:
            bias = module.bias_delta_on(base.bias.detach())
            expected_bias = theirs.bias.detach() - base.bias.detach()
            worst = max(worst, (expected_bias if bias is None else bias - expected_bias).abs().max().item())
    ours_out = merge(adapter, {"unet": unet})["unet"]
    with torch.no_grad():
        args = (inputs["sample"], inputs["timestep"])
        output_diff = (ours_out(*args, encoder_hidden_states=inputs["states"]).sample
                       - merged(*args, encoder_hidden_states=inputs["states"]).sample).abs().max().item()
    FIGURES[f"peft-{kind}"] = (worst, output_diff)
    assert worst < TOLERANCE and output_diff < TOLERANCE, (kind, worst, output_diff)


def test_print_figures():
    """Not a check: the measured differences, for the record (pytest -s)."""
    for case, (weight, output) in sorted(FIGURES.items()):
        print(f"{case:>16}: weight {weight:.1e}  output {output:.1e}")
