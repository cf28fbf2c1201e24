"""Reading every LoRA format into the canonical form, writing kohya files, base detection."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from library.compat import detect_adapter_base, detect_base
from library.errors import AdapterFileError, UnsupportedFamilyError
from library.formats import plan_file, read_adapter, write_kohya
from library.formats.names import unflatten
from library.layouts.ldm_names import ldm_unet_name
from library.layouts.model_layout import built_in_layout, module_shapes
from library.metadata import AdapterInfo
from library.synthetic import random_adapter, small_kohya_tensors, write_small_kohya

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.0.proj", "ff.net.2", "conv1", "time_emb_proj"]


# --------------------------------------------------------------------------- layouts


def test_toy_layout_matches_the_real_toy_unet():
    from pipeline.toy_base import new_unet

    assert module_shapes(new_unet()) == built_in_layout("toy").modules["unet"]


@pytest.mark.parametrize(("base", "path", "ldm"), [
    ("sdxl", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
     "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("sdxl", "up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
    ("sdxl", "mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
    ("sd1", "up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
    ("sd1", "down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
    ("sd1", "up_blocks.3.resnets.2.conv_shortcut", "output_blocks.11.0.skip_connection"),
    ("toy", "down_blocks.1.attentions.0.proj_in", "input_blocks.3.1.proj_in"),
    ("toy", "up_blocks.0.upsamplers.0.conv", "output_blocks.1.2.conv"),
])
def test_original_sd_names(base, path, ldm):
    from library.layouts.configs import BASE_CONFIGS

    assert ldm_unet_name(path, BASE_CONFIGS[base][0]) == ldm
    layout = built_in_layout(base)
    assert layout.resolve("unet", ldm.replace(".", "_")) == path


def test_built_in_layouts_have_no_ambiguous_flat_names():
    for base in ("sd1", "sd2", "sdxl", "toy"):
        for component, index in built_in_layout(base).flat_index.items():
            assert "" not in index.values(), (base, component)


def test_layout_cache_gives_back_the_built_layout(tmp_path, monkeypatch):
    from library.layouts import cache
    from library.layouts.configs import BASE_CONFIGS
    from library.layouts.model_layout import _build_layout, _decoded

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    built = _build_layout("sdxl")
    path = cache.cache_path("sdxl", BASE_CONFIGS["sdxl"])
    cache.write(path, cache.encode(built))
    again = _decoded(cache.read(path))
    assert again == built and [list(m) for m in again.modules.values()] == [list(m) for m in built.modules.values()]
    path.write_text("{not json")
    assert cache.read(path) is None  # rebuilt, not trusted


def test_unflatten_keeps_compound_words():
    assert unflatten("down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_out_0") == \
        "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0"


# --------------------------------------------------------------------------- round trip and base


@pytest.mark.parametrize("base", ["toy", "sd1", "sd2", "sdxl"])
def test_write_read_round_trip_is_exact(tmp_path, base):
    adapter = random_adapter(base, every=11, alpha=0.3)
    info = AdapterInfo(name="my lora", title="My LoRA", triggers=["zqx shape", "glow"], tags=["a", "b"],
                       description="desc", kind="content", tag_frequency={"1_set": {"zqx": 3, "b": 1}})
    path = write_kohya(adapter, tmp_path / "out.safetensors", info, base=base)
    back = read_adapter(path)
    assert back.source_format == "kohya"
    assert set(back.modules) == set(adapter.modules)
    for target, module in adapter.modules.items():
        assert torch.equal(back.modules[target].down, module.down)
        assert torch.equal(back.modules[target].up, module.up)
        assert back.modules[target].alpha == module.alpha
    meta = back.metadata
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "0.3"
    assert meta["ss_output_name"] == "my_lora"
    assert json.loads(meta["medley.triggers"]) == ["zqx shape", "glow"]
    assert meta["medley.kind"] == "content"
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.trigger_phrase"] == "zqx shape, glow"
    assert json.loads(meta["ss_tag_frequency"]) == {"1_set": {"zqx": 3, "b": 1}}
    assert detect_adapter_base(back) == base


def test_sdxl_is_written_with_original_sd_names_and_two_text_encoders(tmp_path):
    path = write_kohya(random_adapter("sdxl", every=5), tmp_path / "xl.safetensors", base="sdxl")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert not any(k.startswith("lora_unet_down_blocks_") for k in keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in keys)


def test_half_precision_round_trip(tmp_path):
    adapter = random_adapter("toy", every=13, dtype=torch.float16)
    back = read_adapter(write_kohya(adapter, tmp_path / "h.safetensors"))
    target = next(iter(adapter.modules))
    assert back.modules[target].down.dtype == torch.float16
    assert torch.equal(back.modules[target].down, adapter.modules[target].down)


def test_base_detection_from_shapes_and_hints():
    toy = random_adapter("toy", every=7)
    assert detect_adapter_base(toy) == "toy"
    resnet_only = {k: v for k, v in random_adapter("sd1", every=1).modules.items() if ".resnets." in k and "conv1" in k}
    from library.compat import adapter_shapes
    from library.lora import LoraAdapter

    shapes = adapter_shapes(LoraAdapter(resnet_only))
    assert detect_base(shapes) == "sd1"  # fits SD1 and SD2 alike: the default order
    assert detect_base(shapes, ["sd2"]) == "sd2"  # the metadata decides between fitting bases
    assert detect_base(shapes, ["sdxl"]) == "sd1"  # but cannot override the shapes
    assert detect_base({}, ["toy"]) == "toy"
    assert detect_base({}) == "unknown"


def test_toy_declared_in_metadata_counts_when_shapes_say_nothing(tmp_path):
    tensors = {"lora_unet_my_custom_block.lora_down.weight": torch.ones(2, 5),
               "lora_unet_my_custom_block.lora_up.weight": torch.ones(7, 2)}
    save_file(tensors, str(tmp_path / "c.safetensors"), metadata={"modelspec.architecture": "medley-toy/lora"})
    plan = plan_file(tmp_path / "c.safetensors")
    assert "unet.my.custom.block" in plan.modules  # no layout knows it: unflattened by rule
    assert detect_base(plan.shapes(), plan.hints) == "toy"


# --------------------------------------------------------------------------- individual formats


def test_kohya_alpha_defaults_and_zero(tmp_path):
    tensors = small_kohya_tensors()
    del tensors["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha"]
    tensors["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_q.alpha"] = torch.tensor(0.0)
    save_file(tensors, str(tmp_path / "a.safetensors"))
    adapter = read_adapter(tmp_path / "a.safetensors")
    assert {m.alpha for m in adapter.modules.values()} == {2.0}  # absent or 0: alpha = rank
    assert adapter.targets() == [
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
        "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q",
    ]


def test_kohya_text_encoder_names_resolve_for_clip_and_bert(tmp_path):
    tensors = {
        "lora_te_text_model_encoder_layers_3_self_attn_q_proj.lora_down.weight": torch.ones(2, 768),
        "lora_te_text_model_encoder_layers_3_self_attn_q_proj.lora_up.weight": torch.ones(768, 2),
        "lora_te_text_model_encoder_layers_3_mlp_fc1.lora_down.weight": torch.ones(2, 768),
        "lora_te_text_model_encoder_layers_3_mlp_fc1.lora_up.weight": torch.ones(3072, 2),
    }
    save_file(tensors, str(tmp_path / "clip.safetensors"))
    plan = plan_file(tmp_path / "clip.safetensors")
    sd1_paths = built_in_layout("sd1").modules["text_encoder"]
    for target in plan.modules:
        component, _, path = target.partition(".")
        assert component == "text_encoder" and path in sd1_paths
    assert detect_base(plan.shapes(), plan.hints) == "sd1"

    bert = {"lora_te_encoder_layer_2_attention_self_query.lora_down.weight": torch.ones(2, 384),
            "lora_te_encoder_layer_2_attention_self_query.lora_up.weight": torch.ones(384, 2)}
    save_file(bert, str(tmp_path / "bert.safetensors"))
    plan = plan_file(tmp_path / "bert.safetensors")
    assert list(plan.modules) == ["text_encoder.encoder.layer.2.attention.self.query"]
    assert detect_base(plan.shapes(), plan.hints) == "toy"


def test_conv_lora_reads_with_kernel(tmp_path):
    tensors = {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.ones(4, 64, 3, 3),
               "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.ones(64, 4, 1, 1),
               "lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(1.0)}
    save_file(tensors, str(tmp_path / "conv.safetensors"))
    adapter = read_adapter(tmp_path / "conv.safetensors")
    module = adapter.modules["unet.down_blocks.0.resnets.0.conv1"]
    assert module.is_conv and module.delta().shape == (64, 64, 3, 3)
    assert detect_adapter_base(adapter) == "toy"


def test_peft_metadata_sets_alpha_per_module(tmp_path):
    prefix = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    tensors = {f"{prefix}.to_k.lora_A.weight": torch.ones(4, 384), f"{prefix}.to_k.lora_B.weight": torch.ones(128, 4),
               f"{prefix}.to_q.lora_A.weight": torch.ones(4, 128), f"{prefix}.to_q.lora_B.weight": torch.ones(128, 4)}
    config = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn2.to_k": 2}}
    save_file(tensors, str(tmp_path / "p.safetensors"), metadata={"lora_adapter_metadata": json.dumps(config)})
    adapter = read_adapter(tmp_path / "p.safetensors")
    assert adapter.source_format == "diffusers-peft"
    assert adapter.modules[f"{prefix}.to_k"].alpha == 2.0
    assert adapter.modules[f"{prefix}.to_q"].alpha == 8.0
    save_file(tensors, str(tmp_path / "bare.safetensors"))
    assert {m.alpha for m in read_adapter(tmp_path / "bare.safetensors").modules.values()} == {4.0}


@pytest.mark.parametrize(("key", "family"), [
    ("lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", "LoHa"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.lokr_w1", "LoKr"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.dora_scale", "DoRA"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight", "lora_mid"),
])
def test_incomplete_family_modules_are_named(tmp_path, key, family):
    """LyCORIS / DoRA families are read; a module missing its partners is refused naming its family."""
    tensors = small_kohya_tensors()
    tensors[key] = torch.ones(2, 2)
    save_file(tensors, str(tmp_path / "x.safetensors"))
    with pytest.raises(AdapterFileError, match=family):
        plan_file(tmp_path / "x.safetensors")


@pytest.mark.parametrize(("key", "family"), [
    ("lora_unet_down_blocks_0_resnets_0_conv1.oft_blocks", "OFT"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.a1.weight", "GLoRA"),
    ("emb_params", "textual-inversion"),  # an embedding beside LoRA weights with no token named for it
])
def test_unknown_families_are_named(tmp_path, key, family):
    tensors = small_kohya_tensors()
    tensors[key] = torch.ones(2, 2)
    save_file(tensors, str(tmp_path / "x.safetensors"))
    with pytest.raises(UnsupportedFamilyError, match=family):
        plan_file(tmp_path / "x.safetensors")


def test_a_kronecker_of_terabytes_is_refused_from_the_header(tmp_path):
    save_file({"lora_unet_x.lokr_w1": torch.ones(1000, 1000), "lora_unet_x.lokr_w2": torch.ones(1000, 1000)},
              str(tmp_path / "k.safetensors"))
    with pytest.raises(AdapterFileError, match="larger than any layer"):
        plan_file(tmp_path / "k.safetensors")


def test_peft_dora_magnitude_alone_is_named(tmp_path):
    save_file({"unet.down_blocks.0.resnets.0.conv1.lora_magnitude_vector": torch.ones(64)},
              str(tmp_path / "x.safetensors"))
    with pytest.raises(AdapterFileError, match="DoRA"):
        plan_file(tmp_path / "x.safetensors")


def test_unrecognised_keys_are_reported_not_dropped(tmp_path):
    tensors = small_kohya_tensors()
    tensors["something_else.weight"] = torch.ones(2)
    save_file(tensors, str(tmp_path / "x.safetensors"))
    with pytest.raises(AdapterFileError, match="something_else.weight"):
        plan_file(tmp_path / "x.safetensors")


def test_mixed_formats_are_refused(tmp_path):
    tensors = small_kohya_tensors()
    tensors["unet.conv_in.lora_A.weight"] = torch.ones(2, 4, 3, 3)
    tensors["unet.conv_in.lora_B.weight"] = torch.ones(64, 2, 1, 1)
    save_file(tensors, str(tmp_path / "x.safetensors"))
    with pytest.raises(AdapterFileError, match="mixes"):
        plan_file(tmp_path / "x.safetensors")


def test_missing_partner_is_reported(tmp_path):
    tensors = small_kohya_tensors()
    del tensors["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight"]
    save_file(tensors, str(tmp_path / "x.safetensors"))
    with pytest.raises(AdapterFileError, match="no lora_up"):
        plan_file(tmp_path / "x.safetensors")


def test_written_file_loads_in_plain_kohya_reader(tmp_path):
    """Keys follow kohya's convention exactly: <name>.lora_down.weight / .lora_up.weight / .alpha."""
    path = write_small_kohya(tmp_path / "k.safetensors")
    adapter = read_adapter(path)
    again = write_kohya(adapter, tmp_path / "k2.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as first, safe_open(str(again), "pt") as second:
        assert set(first.keys()) == set(second.keys())


# --------------------------------------------------------------------------- peer equivalence with diffusers/peft


def _toy_peft_unet():
    from diffusers.utils.torch_utils import randn_tensor  # noqa: F401 - diffusers present
    from peft import LoraConfig

    from pipeline.toy_base import new_unet

    torch.manual_seed(0)
    unet = new_unet().eval()
    with_lora = copy.deepcopy(unet)
    # one alpha for every module: diffusers 0.42 mislabels per-module alphas of kohya files (its alpha_pattern
    # keys keep ".processor.to_k_lora.down.weight"), so mixed alphas are tested against PEFT alone
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, rank_pattern={"attn2.to_v": 2},
                        init_lora_weights=True)
    with_lora.add_adapter(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in with_lora.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return unet, with_lora, config


def _unet_output(unet, inputs):
    with torch.no_grad():
        return unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["states"]).sample


def _merged(unet, adapter):
    merged = copy.deepcopy(unet)
    with torch.no_grad():
        for path, module in adapter.component_modules("unet").items():
            weight = merged.get_submodule(path).weight
            weight += module.delta().to(weight.dtype)
    return merged


_TOY_LDM_BLOCKS = {  # toy UNet (one layer per block): diffusers prefix -> original-SD prefix, flattened
    "down_blocks_0_resnets_0_": "input_blocks_1_0_",
    "down_blocks_1_resnets_0_": "input_blocks_3_0_",
    "down_blocks_1_attentions_0_": "input_blocks_3_1_",
    "down_blocks_2_resnets_0_": "input_blocks_5_0_",
    "down_blocks_2_attentions_0_": "input_blocks_5_1_",
    "mid_block_resnets_0_": "middle_block_0_",
    "mid_block_attentions_0_": "middle_block_1_",
    "mid_block_resnets_1_": "middle_block_2_",
    "up_blocks_0_resnets_0_": "output_blocks_0_0_",
    "up_blocks_0_attentions_0_": "output_blocks_0_1_",
    "up_blocks_0_resnets_1_": "output_blocks_1_0_",
    "up_blocks_0_attentions_1_": "output_blocks_1_1_",
    "up_blocks_1_resnets_0_": "output_blocks_2_0_",
    "up_blocks_1_attentions_0_": "output_blocks_2_1_",
    "up_blocks_1_resnets_1_": "output_blocks_3_0_",
    "up_blocks_1_attentions_1_": "output_blocks_3_1_",
    "up_blocks_2_resnets_0_": "output_blocks_4_0_",
    "up_blocks_2_resnets_1_": "output_blocks_5_0_",
}
_RESNET_LAYERS = {"conv1": "in_layers_2", "time_emb_proj": "emb_layers_1"}


def _original_sd_name(name: str) -> str:
    for prefix, ldm in _TOY_LDM_BLOCKS.items():
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if "_resnets_" in prefix:
                layer, _, tail = rest.partition(".")
                rest = f"{_RESNET_LAYERS[layer]}.{tail}"
            return ldm + rest
    raise KeyError(name)


def _write_fixtures(directory: Path, with_lora, config) -> dict[str, Path]:
    """The same LoRA in each format, written with diffusers'/peft's own converters."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import UNET_TO_DIFFUSERS, convert_state_dict_to_kohya
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(with_lora)  # "<module>.lora_A.weight"
    scales = {name: module.scaling["default"] * module.r["default"]
              for name, module in with_lora.named_modules() if hasattr(module, "lora_A")}
    paths: dict[str, Path] = {}

    peft_dir = directory / "diffusers-peft"
    StableDiffusionPipeline.save_lora_weights(peft_dir, unet_lora_layers=state,
                                              unet_lora_adapter_metadata=config.to_dict(), safe_serialization=True)
    paths["diffusers-peft"] = peft_dir / "pytorch_lora_weights.safetensors"

    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in state.items()})
    for name, alpha in scales.items():  # diffusers' converter writes alpha = rank; keep the real alpha
        kohya[f"lora_unet_{name.replace('.', '_')}.alpha"] = torch.tensor(float(alpha))
    paths["kohya"] = directory / "kohya.safetensors"
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(paths["kohya"]))

    original = {"lora_unet_" + _original_sd_name(key.removeprefix("lora_unet_")): value for key, value in kohya.items()}
    paths["kohya-original-sd"] = directory / "kohya-ldm.safetensors"
    save_file({k: v.contiguous() for k, v in original.items()}, str(paths["kohya-original-sd"]))

    to_legacy = {new: old for old, new in UNET_TO_DIFFUSERS.items() if "magnitude" not in old}
    legacy = {}
    for key, value in state.items():
        module_name = key.split(".lora_")[0]
        if key.split(".lora_")[1].startswith("B"):  # no alphas in this format: bake the scale in
            value = value * (scales[module_name] / value.shape[1])
        key = "unet." + key.removesuffix(".weight")
        for new, old in sorted(to_legacy.items(), key=lambda item: -len(item[0])):
            if key.endswith(new):
                processor = ".processor" if old.startswith((".to_q_", ".to_k_", ".to_v_", ".to_out_")) else ""
                key = key[: -len(new)] + processor + old
                break
        legacy[key + ".weight"] = value
    paths["diffusers-legacy"] = directory / "legacy.safetensors"
    save_file({k: v.contiguous() for k, v in legacy.items()}, str(paths["diffusers-legacy"]))

    from pipeline.toy_base import new_unet

    plain = get_peft_model(new_unet(), copy.deepcopy(config))
    result = set_peft_model_state_dict(plain, {f"base_model.model.{k}": v for k, v in state.items()})
    assert not [key for key in result.unexpected_keys if "lora" in key]
    plain.save_pretrained(str(directory / "plain-peft"), safe_serialization=True)
    paths["peft"] = directory / "plain-peft" / "adapter_model.safetensors"
    return paths


@pytest.fixture(scope="module")
def peer_setup(tmp_path_factory):
    from pipeline.toy_base import assemble, new_vae

    unet, with_lora, config = _toy_peft_unet()
    directory = tmp_path_factory.mktemp("peer")
    paths = _write_fixtures(directory, with_lora, config)
    generator = torch.Generator().manual_seed(2)
    inputs = {"sample": torch.randn(1, 4, 16, 16, generator=generator), "timestep": torch.tensor([500]),
              "states": torch.randn(1, 24, 384, generator=generator)}
    pipe = assemble(new_vae(), copy.deepcopy(unet))
    return unet, _unet_output(with_lora, inputs), paths, inputs, pipe


@pytest.mark.parametrize("file_format", ["diffusers-peft", "kohya", "kohya-original-sd", "diffusers-legacy", "peft"])
def test_peer_equivalence_with_diffusers(peer_setup, file_format):
    unet, reference, paths, inputs, pipe = peer_setup
    path = paths[file_format]
    adapter = read_adapter(path)
    expected_format = "kohya" if file_format.startswith("kohya") else file_format
    assert adapter.source_format == expected_format
    assert detect_adapter_base(adapter) == "toy"
    ours = _unet_output(_merged(unet, adapter), inputs)
    assert (ours - reference).abs().max().item() < 1e-4
    if file_format == "peft":
        return  # diffusers does not load bare PEFT checkpoints; the PEFT model itself is the peer
    # diffusers maps original-SD block names only when given the UNet config (its SDXL loader passes it itself)
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="peer", unet_config=pipe.unet.config)
    try:
        theirs = _unet_output(pipe.unet, inputs)
    finally:
        pipe.unload_lora_weights()
    assert (theirs - reference).abs().max().item() < 1e-4
    assert (ours - theirs).abs().max().item() < 1e-4


def test_toy_text_encoder_layout_matches_minilm(peer_setup):
    pipe = peer_setup[4]
    assert module_shapes(pipe.text_encoder) == built_in_layout("toy").modules["text_encoder"]


def _merged_encoder(encoder, adapter):
    merged = copy.deepcopy(encoder)
    with torch.no_grad():
        for path, module in adapter.component_modules("text_encoder").items():
            merged.get_submodule(path).weight += module.delta()
    return merged


def _encode(encoder, ids):
    with torch.no_grad():
        return encoder(ids)[0]


def test_text_encoder_lora_matches_peft(peer_setup, tmp_path):
    """The toy's BERT text encoder: PEFT is the peer (diffusers 0.42 loads text-encoder LoRAs only for CLIP)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = peer_setup[4]
    encoder = pipe.text_encoder
    config = LoraConfig(r=4, lora_alpha=2, target_modules=["query", "value", "dense"])
    with_lora = inject_adapter_in_model(config, copy.deepcopy(encoder))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in with_lora.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    ids = pipe.tokenizer(["a red circle"], padding="max_length", return_tensors="pt").input_ids
    reference = _encode(with_lora, ids)
    state = get_peft_model_state_dict(with_lora)

    StableDiffusionPipeline.save_lora_weights(tmp_path / "peft", text_encoder_lora_layers=state,
                                              text_encoder_lora_adapter_metadata=config.to_dict(),
                                              safe_serialization=True)
    kohya = convert_state_dict_to_kohya({f"text_encoder.{k}": v for k, v in state.items()})
    kohya = {k: (torch.tensor(2.0) if k.endswith(".alpha") else v.contiguous()) for k, v in kohya.items()}
    save_file(kohya, str(tmp_path / "kohya.safetensors"))

    for path in (tmp_path / "peft" / "pytorch_lora_weights.safetensors", tmp_path / "kohya.safetensors"):
        adapter = read_adapter(path)
        assert adapter.targets() == sorted(f"text_encoder.{name}" for name in state_module_names(state))
        assert detect_adapter_base(adapter) == "toy"
        assert (_encode(_merged_encoder(encoder, adapter), ids) - reference).abs().max().item() < 1e-4


def state_module_names(state: dict[str, torch.Tensor]) -> set[str]:
    return {key.split(".lora_")[0] for key in state}
