"""A messy adapter folder for scan tests and benchmarks, like a real downloads folder: every family Medley
reads (kohya LoRA, LyCORIS LoHa / LoKr / LoCon-CP / full / DoRA, PEFT DoRA, diffusers legacy, textual
inversions, cloneofsimo, FLUX and SD3), files it refuses (pickles, truncated or non-JSON headers, adapters of
a language model or a ViT, OFT), byte-for-byte duplicates, and sidecars (``.civitai.info``, A1111 ``.json``,
``.png`` / ``.preview.png`` previews, ``.txt``). Weights are random and small (toy-base shapes); each adapter
"draws" one concept, written where its trainer would write it (``ss_tag_frequency``, ``ss_output_name``,
Civitai ``trainedWords`` / ``description`` / ``tags``), so a search can find it by what it draws.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

CONCEPTS: tuple[str, ...] = ("watercolor fox", "neon city", "knitted owl", "ink dragon", "pixel castle",
                             "velvet rose", "paper crane", "glass whale", "copper robot", "moss temple")
_BLOCK = "down_blocks_1_attentions_0_transformer_blocks_0_"
_TOY_TO_K = f"lora_unet_{_BLOCK}attn2_to_k"  # toy UNet: 384 -> 128
_TOY_TO_Q = f"lora_unet_{_BLOCK}attn1_to_q"  # 128 -> 128
_TOY_CONV = "lora_unet_down_blocks_1_resnets_0_conv1"  # 64 -> 128, 3x3
_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
Tensors = dict[str, torch.Tensor]


@dataclass
class MessyFolder:
    """What was written: the folder, the adapter files that must be catalogued (relative path -> concept),
    the duplicates, and the refused files (relative path -> a word their refusal must contain)."""

    folder: Path
    adapters: dict[str, str] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)  # relative path -> family the catalogue records
    duplicates: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(1 for path in self.folder.rglob("*") if path.is_file())


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator) * 0.05


def _kohya_lora(g: torch.Generator) -> Tensors:
    return {f"{_TOY_TO_K}.lora_down.weight": _randn(g, 4, 384), f"{_TOY_TO_K}.lora_up.weight": _randn(g, 128, 4),
            f"{_TOY_TO_K}.alpha": torch.tensor(2.0), f"{_TOY_CONV}.lora_down.weight": _randn(g, 4, 64, 3, 3),
            f"{_TOY_CONV}.lora_up.weight": _randn(g, 128, 4, 1, 1), f"{_TOY_CONV}.alpha": torch.tensor(1.0)}


def _loha(g: torch.Generator) -> Tensors:
    parts = {"hada_w1_a": (128, 4), "hada_w1_b": (4, 128), "hada_w2_a": (128, 4), "hada_w2_b": (4, 128)}
    conv = {"hada_w1_a": (128, 4), "hada_w1_b": (4, 576), "hada_w2_a": (128, 4), "hada_w2_b": (4, 576)}
    return {**{f"{_TOY_TO_Q}.{k}": _randn(g, *s) for k, s in parts.items()}, f"{_TOY_TO_Q}.alpha": torch.tensor(2.0),
            **{f"{_TOY_CONV}.{k}": _randn(g, *s) for k, s in conv.items()}}


def _lokr(g: torch.Generator) -> Tensors:
    return {f"{_TOY_TO_K}.lokr_w1": _randn(g, 8, 16), f"{_TOY_TO_K}.lokr_w2_a": _randn(g, 16, 4),
            f"{_TOY_TO_K}.lokr_w2_b": _randn(g, 4, 24), f"{_TOY_TO_K}.alpha": torch.tensor(4.0)}


def _locon_cp(g: torch.Generator) -> Tensors:
    return {f"{_TOY_CONV}.lora_down.weight": _randn(g, 4, 64, 1, 1),
            f"{_TOY_CONV}.lora_mid.weight": _randn(g, 4, 4, 3, 3),
            f"{_TOY_CONV}.lora_up.weight": _randn(g, 128, 4, 1, 1), f"{_TOY_CONV}.alpha": torch.tensor(4.0)}


def _full(g: torch.Generator) -> Tensors:
    return {f"{_TOY_TO_K}.diff": _randn(g, 128, 384), f"{_TOY_TO_K}.diff_b": _randn(g, 128)}


def _dora(g: torch.Generator) -> Tensors:
    tensors = _kohya_lora(g)
    tensors[f"{_TOY_TO_K}.dora_scale"] = 1 + _randn(g, 128, 1)
    return tensors


def _peft_dora(g: torch.Generator) -> Tensors:
    prefix = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    return {f"{prefix}.lora_A.weight": _randn(g, 4, 384), f"{prefix}.lora_B.weight": _randn(g, 128, 4),
            f"{prefix}.lora_magnitude_vector": 1 + _randn(g, 128)}


def _legacy(g: torch.Generator) -> Tensors:
    prefix = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor"
    return {f"{prefix}.to_k_lora.down.weight": _randn(g, 4, 384), f"{prefix}.to_k_lora.up.weight": _randn(g, 128, 4),
            f"{prefix}.to_q_lora.down.weight": _randn(g, 4, 128), f"{prefix}.to_q_lora.up.weight": _randn(g, 128, 4)}


def _embedding(g: torch.Generator) -> Tensors:
    return {"emb_params": _randn(g, 2, 384)}


def _flux(g: torch.Generator) -> Tensors:
    return {"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": _randn(g, 2, 3072),
            "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": _randn(g, 3072, 2)}


def _sd3(g: torch.Generator) -> Tensors:
    prefix = "transformer.transformer_blocks.0.attn.add_k_proj"
    return {f"{prefix}.lora_A.weight": _randn(g, 2, 1536), f"{prefix}.lora_B.weight": _randn(g, 1536, 2)}


def _cloneofsimo(g: torch.Generator) -> tuple[Tensors, dict[str, str]]:
    """SD1 numbering in cloneofsimo's order: per transformer block attn1 (q, k, v, out), GEGLU, attn2."""
    from library.formats.cloneofsimo import BLOCK_ORDERS, DEFAULT_CLASSES, _unet_order
    from library.layouts.model_layout import built_in_layout

    layout = built_in_layout("sd1")
    tensors: Tensors = {}
    for index, path in enumerate(_unet_order(layout, DEFAULT_CLASSES["unet"], BLOCK_ORDERS[0])):
        shape = layout.shape("unet", path)
        assert shape is not None
        tensors[f"unet:{index}:down"] = _randn(g, 1, shape.in_features)
        tensors[f"unet:{index}:up"] = _randn(g, shape.out_features, 1)
    return tensors, {"unet": json.dumps(list(DEFAULT_CLASSES["unet"]))}


# kind -> (tensors maker, family the catalogue records)
GOOD_KINDS: dict[str, tuple[Callable[[torch.Generator], Tensors], str]] = {
    "kohya-lora": (_kohya_lora, "lora"), "loha": (_loha, "loha"), "lokr": (_lokr, "lokr"),
    "locon-cp": (_locon_cp, "locon"), "full": (_full, "full"), "dora": (_dora, "dora+lora"),
    "peft-dora": (_peft_dora, "dora"), "legacy": (_legacy, "lora"), "embedding": (_embedding, "embedding"),
    "flux": (_flux, "lora"), "sd3": (_sd3, "lora"),
}


def _safetensors_bytes(tensors: Tensors, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


def _bad_files(g: torch.Generator, index: int) -> tuple[str, bytes, str]:
    """(suffix, content, word its refusal names) of the index-th refused file."""
    good = _safetensors_bytes(_kohya_lora(g), {})
    choices: list[tuple[str, bytes, str]] = [
        (".pt", pickle.dumps({"state_dict": [1, 2, 3]}), "pickled"),
        (".ckpt", b"PK\x03\x04" + bytes(60), "pickled"),
        (".bin", pickle.dumps([0.5] * 8), "pickled"),
        (".safetensors", good[: len(good) // 2], "truncated"),
        (".safetensors", struct.pack("<Q", 12) + b"not a header", "not valid JSON"),
        (".safetensors", _safetensors_bytes({"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight":
                                             _randn(g, 8, 768),
                                             "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight":
                                             _randn(g, 2304, 8), "base_model.model.score.weight": _randn(g, 2, 768)},
                                            {}), "language model"),
        (".safetensors", _safetensors_bytes({"w_a_000": _randn(g, 4, 768), "w_b_000": _randn(g, 768, 4)}, {}), "ViT"),
        (".safetensors", _safetensors_bytes({f"{_TOY_TO_K}.oft_blocks": _randn(g, 4, 32, 32)}, {}), "OFT"),
        (".safetensors", b"", "empty"),
    ]
    return choices[index % len(choices)]


def _metadata(concept: str, name: str) -> dict[str, str]:
    words = concept.split()
    frequency = {f"10_{words[-1]}": {concept: 12, words[0]: 7, "masterpiece": 3}}
    return {"ss_output_name": name, "ss_tag_frequency": json.dumps(frequency), "ss_network_dim": "4"}


def _sidecars(path: Path, concept: str, index: int) -> None:
    stem = path.with_suffix("")
    if index % 3 == 0:
        stem.with_suffix(".civitai.info").write_text(json.dumps({
            "trainedWords": [f"{concept} style"], "description": f"<p>Draws a <b>{concept}</b>.</p>",
            "model": {"name": concept.title(), "tags": [{"name": concept.split()[-1]}, "illustration"]}}))
    if index % 4 == 1:
        stem.with_suffix(".json").write_text(json.dumps({"activation text": concept.replace(" ", "_"),
                                                         "description": f"a {concept}", "preferred weight": 0.7}))
    if index % 5 == 2:
        stem.with_suffix(".preview.png" if index % 2 else ".png").write_bytes(_PNG)
    if index % 7 == 3:
        stem.with_suffix(".txt").write_text(f"{concept}, detailed")


def build_messy_folder(folder: Path, count: int = 520, seed: int = 0, extra: Sequence[Path] = ()) -> MessyFolder:
    """Write ``count`` adapter-like files (plus sidecars) under ``folder``; ``extra`` files are copied in as well
    (e.g. real third-party adapters: counted as adapters when ``.safetensors``). Deterministic in ``seed``."""
    folder = Path(folder)
    generator = torch.Generator().manual_seed(seed)
    result = MessyFolder(folder=folder)
    kinds = list(GOOD_KINDS)
    subfolders = ("", "downloads", "styles/older", "characters")
    good_paths: list[Path] = []
    for index in range(count):
        concept = CONCEPTS[index % len(CONCEPTS)]
        subfolder = folder / subfolders[index % len(subfolders)]
        subfolder.mkdir(parents=True, exist_ok=True)
        if index % 10 == 9:  # one in ten: refused
            suffix, content, word = _bad_files(generator, index // 10)
            path = subfolder / f"bad_{index:04d}{suffix}"
            path.write_bytes(content)
            result.refused[path.relative_to(folder).as_posix()] = word
        elif index % 25 == 12 and good_paths:  # a byte-for-byte copy of an earlier file
            source = good_paths[(index * 7) % len(good_paths)]
            path = subfolder / f"copy_of_{source.stem}_{index:04d}.safetensors"
            shutil.copyfile(source, path)
            result.duplicates.append(path.relative_to(folder).as_posix())
        else:
            kind = "cloneofsimo" if index % 100 == 50 else kinds[index % len(kinds)]
            name = f"{concept.replace(' ', '_')}_{kind}_{index:04d}"
            path = subfolder / f"{name}.safetensors"
            if kind == "cloneofsimo":
                tensors, metadata = _cloneofsimo(generator)
                family = "lora"
            else:
                maker, family = GOOD_KINDS[kind]
                tensors, metadata = maker(generator), {}
            path.write_bytes(_safetensors_bytes(tensors, {**metadata, **_metadata(concept, name)}))
            _sidecars(path, concept, index)
            relative = path.relative_to(folder).as_posix()
            result.adapters[relative] = concept
            result.families[relative] = family
            good_paths.append(path)
    for source in extra:
        target = folder / "real" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return result


__all__ = ["CONCEPTS", "GOOD_KINDS", "MessyFolder", "build_messy_folder", "save_file"]
