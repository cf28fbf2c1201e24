"""Real third-party adapter files (../shared/real-adapters, read-only), and the families and bases it lacks.

Every file of the folder's manifest is imported into a temporary catalogue and must come out as the
manifest says: its family, its base and its rank, or refused (pickles; adapters of other kinds of model,
the refusal naming what they are for). The folder is absent on machines without it: those tests skip.
Files the folder has no example of are built here: an SDXL LoHa/LoKr with LyCORIS' functional API
(kohya's original-SD UNet names, two text encoders), FLUX and SD3 adapters in the names their trainers
write, and textual inversions in each spelling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from library import catalog as catalog_module
from library.catalog import Catalog
from library.compat import IncompatibleAdapterError, check_applicable
from library.errors import AdapterFileError, ForeignAdapterError, PickledFileError
from library.formats import plan_file, read_adapter
from library.formats.header import read_header
from library.formats.reader import read_textual_inversion
from library.layouts.model_layout import built_in_layout, flatten

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-adapters"
MANIFEST = REAL / "manifest.json"
ENTRIES: list[dict] = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else []
# manifest family -> (Medley's format, the families its modules and embeddings hold)
READ_AS: dict[str, tuple[str, str]] = {
    "cloneofsimo": ("cloneofsimo", "embedding+lora"),
    "diffusers_unet_prefixed": ("diffusers-legacy", "lora"),
    "lycoris_lokr": ("kohya", "lokr"),
    "peft_sd": ("peft", "lora"),
    "textual_inversion": ("textual-inversion", "embedding"),
}
REFUSED: dict[str, type[AdapterFileError]] = {"pickled": PickledFileError, "other_lora": ForeignAdapterError,
                                              "peft_other": ForeignAdapterError}
FOREIGN_WORDS = ("language model", "classifier", "classification", "ViT", "image encoder", "text model")


@pytest.fixture
def catalog(medley_home, monkeypatch, tmp_path):
    monkeypatch.setattr(catalog_module, "STARTER_DIR", tmp_path / "no-starters")
    with Catalog() as opened:
        yield opened


needs_real = pytest.mark.skipif(not ENTRIES, reason=f"no real adapters at {REAL} (a machine without the shared "
                                                      "folder)")


@needs_real
@pytest.mark.parametrize("entry", ENTRIES, ids=[entry["file"] for entry in ENTRIES])
def test_real_file_is_read_as_its_manifest_says(catalog, entry):
    path = REAL / entry["file"]
    family = entry["family"]
    if family in REFUSED or entry.get("base_guess") == "other":
        with pytest.raises(REFUSED.get(family, ForeignAdapterError)) as caught:
            catalog.import_file(path)
        message = str(caught.value)
        assert path.name in message and "\n" not in message and len(catalog) == 0
        if family != "pickled":
            assert "not an adapter for a text-to-image diffusion model" in message
            assert any(word in message for word in FOREIGN_WORDS), message
        return
    assert len(read_header(path).tensors) == entry["n_keys"]
    record = catalog.import_file(path)
    assert record.base == entry["base_guess"]
    assert record.rank == (entry["rank"] or 0)
    if family in READ_AS:
        assert (record.format, record.family) == READ_AS[family]
    assert catalog.list(base=record.base) == [record]
    metadata = read_header(path).metadata  # what it draws, for search: the trainer's own words
    if metadata.get("ss_tag_frequency"):
        assert record.tags and "\\(" not in " ".join(record.tags)
    if metadata.get("ss_output_name") and "modelspec.title" not in metadata:
        assert record.title == metadata["ss_output_name"]
    plan = plan_file(path)
    if not plan.modules:  # a textual inversion: its tokens are its triggers; nothing to apply
        assert plan.tokens and set(plan.tokens) <= set(record.triggers)
        with pytest.raises(AdapterFileError, match="textual-inversion"):
            catalog.load_adapter(record.name)
        vectors = read_textual_inversion(path)
        assert set(vectors.tokens) == set(plan.tokens)
        return
    adapter = catalog.load_adapter(record.name)
    assert len(adapter.modules) == len(plan.modules) and adapter.families == {m.family for m in plan.modules.values()}
    assert all(torch.isfinite(t).all() for m in adapter.modules.values() for t in m.tensors().values())
    targets = sorted(adapter.modules)
    for target in targets[:: max(1, len(targets) // 12)]:  # a dozen spread over the file: dense deltas cost
        module = adapter.modules[target]
        delta = module.delta()
        assert torch.isfinite(delta).all()
        if module.factors() is None:
            continue
        down, up, scale = module.factors()
        stacked = torch.einsum("or,rihw->oihw", up.flatten(1).float(), down.float()) if down.dim() == 4 else \
            up.float() @ down.float()
        assert (stacked.reshape(delta.shape) * scale - delta).abs().max().item() < 1e-4


@needs_real
def test_real_lokr_matches_the_kronecker_formula():
    """The LyCORIS LoKr file against kron(w1_a w1_b, w2_a w2_b) * alpha / dim written out here (ComfyUI's
    formula; LyCORIS' current module cannot rebuild this file's older factor split): < 1e-4."""
    entry = next((e for e in ENTRIES if e["family"] == "lycoris_lokr"), None)
    if entry is None:
        pytest.skip("the manifest has no LoKr file")
    path = REAL / entry["file"]
    plan, adapter = plan_file(path), read_adapter(path)
    from safetensors import safe_open

    worst = 0.0
    targets = sorted(plan.modules)
    with safe_open(str(path), "pt") as handle:
        for target in targets[:: max(1, len(targets) // 24)]:  # two dozen spread over the file
            planned = plan.modules[target]
            get = {p: handle.get_tensor(k).float() for p, k in planned.keys.items()}
            w1 = get["lokr_w1"] if "lokr_w1" in get else get["lokr_w1_a"] @ get["lokr_w1_b"]
            w2 = get["lokr_w2"] if "lokr_w2" in get else get["lokr_w2_a"] @ get["lokr_w2_b"].flatten(1)
            dim = (get["lokr_w1_b"] if "lokr_w1_b" in get else get["lokr_w2_b"]).shape[0]
            expected = torch.kron(w1, w2.flatten(1)) * (get["alpha"].item() / dim)
            worst = max(worst, (adapter.modules[target].delta().flatten(1) - expected).abs().max().item())
    assert worst < 1e-4


@needs_real
def test_real_cloneofsimo_modules_map_to_cloneofsimo_order():
    entry = next((e for e in ENTRIES if e["family"] == "cloneofsimo"), None)
    if entry is None:
        pytest.skip("the manifest has no cloneofsimo file")
    plan = plan_file(REAL / entry["file"])
    by_key = {m.keys["lora_down.weight"]: target for target, m in plan.modules.items()}
    block = "unet.down_blocks.0.attentions.0.transformer_blocks.0"
    # cloneofsimo's diffusers registered attn1, ff (GEGLU proj), attn2 in each block; CLIP: k, v, q, out
    assert [by_key[f"unet:{i}:down"] for i in range(9)] == [
        f"{block}.attn1.to_q", f"{block}.attn1.to_k", f"{block}.attn1.to_v", f"{block}.attn1.to_out.0",
        f"{block}.ff.net.0.proj", f"{block}.attn2.to_q", f"{block}.attn2.to_k", f"{block}.attn2.to_v",
        f"{block}.attn2.to_out.0"]
    assert by_key["text_encoder:0:down"].endswith("layers.0.self_attn.k_proj")
    assert by_key["text_encoder:2:down"].endswith("layers.0.self_attn.q_proj")


def test_cloneofsimo_file_that_fits_no_layout_is_refused(tmp_path):
    save_file({"unet:0:down": torch.ones(1, 77), "unet:0:up": torch.ones(99, 1)}, str(tmp_path / "c.safetensors"),
              metadata={"unet": '["CrossAttention"]'})
    with pytest.raises(AdapterFileError, match="cloneofsimo"):
        plan_file(tmp_path / "c.safetensors")


# --------------------------------------------------------------------------- SDXL with LyCORIS' functional API

SDXL_MODULES = {  # component -> diffusers paths (kohya writes the UNet with original-SD names)
    "unet": ["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "down_blocks.1.resnets.0.conv1",
             "mid_block.attentions.0.transformer_blocks.3.attn1.to_out.0"],
    "text_encoder": ["encoder.layers.0.self_attn.q_proj"],
    "text_encoder_2": ["text_model.encoder.layers.0.self_attn.q_proj"],
}
KOHYA_PREFIXES = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def _sdxl_tensors(algo: str, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, tuple]]:
    """kohya-named LyCORIS tensors for a few SDXL modules, made by lycoris.functional's weight_gen."""
    from lycoris.functional import loha, lokr

    layout = built_in_layout("sdxl")
    tensors: dict[str, torch.Tensor] = {}
    weights: dict[str, tuple] = {}
    for component, paths in SDXL_MODULES.items():
        for path in paths:
            shape = layout.shape(component, path)
            weight = torch.empty(shape.out_features, shape.in_features, *(shape.kernel or ()))
            prefix = KOHYA_PREFIXES[component] + flatten(layout.conventional_name(component, path))
            if algo == "loha":
                # LyCORIS' LohaModule stores a conv's factors flattened: [out, r] x [r, in * kh * kw]
                w1d, w1u, w2d, w2u, _t1, _t2 = loha.weight_gen(weight.flatten(1), 4, tucker=False)
                parts = {"hada_w1_a": w1u, "hada_w1_b": w1d.flatten(1), "hada_w2_a": w2u, "hada_w2_b": w2d.flatten(1)}
            else:
                parts = dict(zip(("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
                                 lokr.weight_gen(weight, 4, tucker=False, decompose_both=True), strict=True))
            parts = {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in parts.items() if v is not None}
            parts["alpha"] = torch.tensor(2.0)
            tensors.update({f"{prefix}.{k}": v for k, v in parts.items()})
            weights[f"{component}.{path}"] = (tuple(weight.shape), parts)
    return tensors, weights


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_sdxl_lycoris_file_is_sdxl_with_exact_deltas(catalog, tmp_path, algo):
    from lycoris.functional import lokr
    from lycoris.functional.loha import diff_weight as loha_diff

    tensors, weights = _sdxl_tensors(algo, torch.Generator().manual_seed(4))
    path = tmp_path / f"sdxl-{algo}.safetensors"
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya"})
    record = catalog.import_file(path)
    assert (record.base, record.family, record.rank, record.format) == ("sdxl", algo, 4, "kohya")
    assert sorted(record.targets) == sorted(weights)
    adapter = catalog.load_adapter(record.name)
    for target, (shape, parts) in weights.items():
        if algo == "loha":
            expected = loha_diff(parts["hada_w1_b"], parts["hada_w1_a"], parts["hada_w2_b"], parts["hada_w2_a"],
                                 None, None, gamma=0.5).reshape(shape)
        else:
            expected = lokr.diff_weight(*(parts.get(k) for k in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2",
                                                                 "lokr_w2_a", "lokr_w2_b", "lokr_t2")),
                                        gamma=2.0).reshape(shape)
        module = adapter.modules[target]
        assert module.weight_shape == shape  # a flattened conv learns its kernel from the SDXL layout
        assert (module.delta() - expected).abs().max().item() < 1e-4
        down, up, scale = module.factors()
        stacked = torch.einsum("or,rihw->oihw", up.flatten(1), down) if down.dim() == 4 else up @ down
        assert (stacked.reshape(shape) * scale - expected).abs().max().item() < 1e-4


# --------------------------------------------------------------------------- FLUX and SD3: catalogued, refused on SD

def _lora(prefix: str, out_features: int, in_features: int, peft: bool = False) -> dict[str, torch.Tensor]:
    down, up = ("lora_A.weight", "lora_B.weight") if peft else ("lora_down.weight", "lora_up.weight")
    return {f"{prefix}.{down}": torch.randn(2, in_features) * 0.01, f"{prefix}.{up}": torch.randn(out_features, 2)}


TRANSFORMER_FILES = {  # name -> (tensors, metadata, expected base)
    "flux-kohya": ({**_lora("lora_unet_double_blocks_0_img_attn_qkv", 9216, 3072),
                    **_lora("lora_unet_single_blocks_3_linear1", 21504, 3072),
                    **_lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768)},
                   {"ss_base_model_version": "flux1"}, "flux"),
    "flux-diffusers": ({**_lora("transformer.transformer_blocks.0.attn.add_q_proj", 3072, 3072, peft=True),
                        **_lora("transformer.single_transformer_blocks.0.attn.to_q", 3072, 3072, peft=True)},
                       {}, "flux"),
    "flux-bfl": (_lora("diffusion_model.double_blocks.1.txt_attn.proj", 3072, 3072, peft=True), {}, "flux"),
    "sd3-diffusers": ({**_lora("transformer.transformer_blocks.0.attn.add_k_proj", 1536, 1536, peft=True),
                       **_lora("transformer.transformer_blocks.0.attn.to_q", 1536, 1536, peft=True)},
                      {"modelspec.architecture": "stable-diffusion-v3-medium/lora"}, "sd3"),
    "sd3-kohya": (_lora("lora_unet_joint_blocks_0_context_block_attn_qkv", 4608, 1536), {}, "sd3"),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMER_FILES))
def test_transformer_base_adapters_are_catalogued_and_refused_on_sd(catalog, tmp_path, name):
    tensors, metadata, base = TRANSFORMER_FILES[name]
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    record = catalog.import_file(path)
    assert record.base == base and record.family == "lora"
    assert any(target.startswith("transformer.") for target in record.targets)
    assert [r.name for r in catalog.list(base=base)] == [record.name]
    adapter = catalog.load_adapter(record.name)
    from library.vocabulary import BASE_NAMES

    with pytest.raises(IncompatibleAdapterError, match=BASE_NAMES[base]) as caught:
        check_applicable(adapter, {"unet": torch.nn.Linear(1, 1), "text_encoder": torch.nn.Linear(1, 1)}, name)
    assert "\n" not in str(caught.value)


def test_refuse_foreign_base_names_both_bases():
    from library.compat import refuse_foreign_base

    with pytest.raises(IncompatibleAdapterError, match="FLUX.*Stable Diffusion 1.x"):
        refuse_foreign_base("flux", "sd1", "x")
    refuse_foreign_base("sdxl", "sdxl", "x")


def test_civitai_base_model_names_the_base_when_names_do_not(catalog, tmp_path):
    """A FLUX LoRA that only trains CLIP-L says so in its Civitai sidecar."""
    path = tmp_path / "clip-only.safetensors"
    save_file(_lora("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768, 768), str(path))
    path.with_suffix(".civitai.info").write_text(json.dumps({"baseModel": "Flux.1 D", "trainedWords": ["zxq"]}))
    record = catalog.import_file(path)
    assert record.base == "flux" and "zxq" in record.triggers


# --------------------------------------------------------------------------- textual inversions in every spelling

TI_FILES = {  # name -> (tensors, metadata, base, tokens)
    "a1111": ({"emb_params": torch.randn(2, 768)}, {}, "sd1", ["a1111"]),
    "a1111-sd2": ({"string_to_param.*": torch.randn(3, 1024)}, {}, "sd2", ["a1111-sd2"]),
    "sdxl": ({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, {}, "sdxl", ["sdxl"]),
    "diffusers": ({"<zq-style>": torch.randn(1, 768)}, {}, "sd1", ["<zq-style>"]),
}


@pytest.mark.parametrize("name", sorted(TI_FILES))
def test_textual_inversions_are_their_own_kind(catalog, tmp_path, name):
    tensors, metadata, base, tokens = TI_FILES[name]
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    record = catalog.import_file(path)
    assert (record.family, record.format, record.base, record.rank) == ("embedding", "textual-inversion", base, 0)
    assert record.triggers[: len(tokens)] == tokens and record.targets == []
    loaded = read_textual_inversion(path)
    assert list(loaded.tokens) == tokens
    encoders = {encoder for vectors in loaded.tokens.values() for encoder in vectors}
    assert encoders == ({"text_encoder", "text_encoder_2"} if base == "sdxl" else {"text_encoder"})


def test_kohya_bundled_embedding_rides_with_its_lora(tmp_path):
    tensors = {**_lora("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 128, 384),
               "bundle_emb.zqtok.emb_params": torch.randn(2, 384)}
    save_file(tensors, str(tmp_path / "b.safetensors"))
    plan = plan_file(tmp_path / "b.safetensors")
    assert plan.family == "embedding+lora" and plan.tokens == ["zqtok"] and len(plan.modules) == 1
    assert set(read_adapter(tmp_path / "b.safetensors").modules) == set(plan.modules)
