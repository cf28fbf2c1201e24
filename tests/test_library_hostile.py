"""Hostile and damaged files: each refused with one clear line, never unpickled, the catalogue unchanged."""

from __future__ import annotations

import builtins
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.cli import main
from library import catalog as catalog_module
from library.catalog import Catalog
from library.compat import IncompatibleAdapterError, check_applicable
from library.errors import AdapterFileError, PickledFileError
from library.synthetic import small_kohya_tensors, write_small_kohya


def raw_safetensors(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A hand-built safetensors file (header dict or raw bytes), optionally lying about its length."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def _torch_zip(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    return buffer.getvalue()


def _tensor_header(entries: dict[str, tuple[str, list[int]]]) -> tuple[dict, bytes]:
    header, offset = {}, 0
    sizes = {"F32": 4, "U8": 1, "F8_E4M3": 1, "BOOL": 1}
    for key, (dtype, shape) in entries.items():
        size = sizes[dtype] * int(torch.tensor(shape).prod().item() if shape else 1)
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, b"\0" * offset


HOSTILE = {  # file name -> words its refusal must contain
    "payload.ckpt": "pickled",
    "payload.pt": "pickled",
    "payload.bin": "pickled",
    "disguised-pickle.safetensors": "pickle",
    "disguised-zip.safetensors": "zip",
    "empty.safetensors": "empty",
    "truncated.safetensors": "truncated",
    "short.safetensors": "truncated",
    "header-past-end.safetensors": "truncated",
    "huge-header.safetensors": "100 MB",
    "not-json.safetensors": "not valid JSON",
    "json-list.safetensors": "not a JSON object",
    "deep-json.safetensors": "not valid JSON",
    "duplicate-keys.safetensors": "duplicate",
    "bad-dtype.safetensors": "unsupported dtype",
    "fp8.safetensors": "unsupported dtype",
    "int-weights.safetensors": "floating point",
    "overlap.safetensors": "overlaps",
    "mismatched-ranks.safetensors": "mismatched ranks",
    "dotdot-key.safetensors": "file path",
    "absolute-key.safetensors": "file path",
    "ten-thousand-keys.safetensors": "10000 tensors",
    "escaping-link.safetensors": "symlink",
    "loha.safetensors": "LoHa",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder of hostile files beside two good ones (one with NaN weights), plus the marker path."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    folder = tmp_path / "corpus"
    folder.mkdir()
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps(_Payload(marker), protocol=2)
    for name in ("payload.ckpt", "payload.pt", "payload.bin", "disguised-pickle.safetensors"):
        (folder / name).write_bytes(payload)
    (folder / "disguised-zip.safetensors").write_bytes(_torch_zip(payload))
    (folder / "empty.safetensors").write_bytes(b"")
    good = write_small_kohya(tmp_path / "good-source.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (folder / "short.safetensors").write_bytes(b"\x05\x00")
    (folder / "header-past-end.safetensors").write_bytes(raw_safetensors(b"{}", length=5000))
    (folder / "huge-header.safetensors").write_bytes(struct.pack("<Q", 200 * 1024 * 1024) + b"{" * 64)
    (folder / "not-json.safetensors").write_bytes(raw_safetensors(b"this is not json"))
    (folder / "json-list.safetensors").write_bytes(raw_safetensors(b"[1, 2, 3]"))
    (folder / "deep-json.safetensors").write_bytes(raw_safetensors(b"[" * 100_000 + b"]" * 100_000))
    (folder / "duplicate-keys.safetensors").write_bytes(raw_safetensors(
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
        b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4))
    prefix = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    header, data = _tensor_header({f"{prefix}.lora_down.weight": ("U8", [2, 384]),
                                   f"{prefix}.lora_up.weight": ("F32", [128, 2])})
    (folder / "bad-dtype.safetensors").write_bytes(raw_safetensors(header, data))
    header, data = _tensor_header({f"{prefix}.lora_down.weight": ("F8_E4M3", [2, 384]),
                                   f"{prefix}.lora_up.weight": ("F32", [128, 2])})
    (folder / "fp8.safetensors").write_bytes(raw_safetensors(header, data))
    save_file({f"{prefix}.lora_down.weight": torch.ones(2, 384, dtype=torch.int32),
               f"{prefix}.lora_up.weight": torch.ones(128, 2)}, str(folder / "int-weights.safetensors"))
    overlapping = {f"{prefix}.lora_down.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                   f"{prefix}.lora_up.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    (folder / "overlap.safetensors").write_bytes(raw_safetensors(overlapping, b"\0" * 4))
    save_file({f"{prefix}.lora_down.weight": torch.ones(2, 384), f"{prefix}.lora_up.weight": torch.ones(128, 3)},
              str(folder / "mismatched-ranks.safetensors"))
    save_file({"lora_unet_../../etc/passwd.lora_down.weight": torch.ones(1)}, str(folder / "dotdot-key.safetensors"))
    save_file({"/etc/passwd": torch.ones(1)}, str(folder / "absolute-key.safetensors"))
    header, data = _tensor_header({f"lora_unet_block_{i}.lora_down.weight": ("F32", [1]) for i in range(10_000)})
    (folder / "ten-thousand-keys.safetensors").write_bytes(raw_safetensors(header, data))
    outside = write_small_kohya(tmp_path / "outside.safetensors", seed=5)
    (folder / "escaping-link.safetensors").symlink_to(outside)
    loha = small_kohya_tensors()
    loha[f"{prefix}.hada_w1_a"] = torch.ones(2, 2)
    save_file(loha, str(folder / "loha.safetensors"))

    write_small_kohya(folder / "good.safetensors", seed=1)
    nan = small_kohya_tensors(seed=2)
    nan[f"{prefix}.lora_up.weight"][0, 0] = float("nan")
    nan[f"{prefix}.lora_down.weight"][1, 3] = float("inf")
    save_file(nan, str(folder / "nan.safetensors"), metadata={"ss_output_name": "nan"})
    assert sorted(p.name for p in folder.iterdir()) == sorted([*HOSTILE, "good.safetensors", "nan.safetensors"])
    return folder, marker


@pytest.fixture
def catalog(medley_home, monkeypatch, tmp_path):
    monkeypatch.setattr(catalog_module, "STARTER_DIR", tmp_path / "no-starters")
    with Catalog() as opened:
        yield opened


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_import_refuses_with_one_clear_line(catalog, corpus, name):
    folder, marker = corpus
    revision = catalog.revision
    with pytest.raises(AdapterFileError) as caught:
        catalog.import_file(folder / name)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    assert name in message and HOSTILE[name] in message
    assert catalog.revision == revision and len(catalog) == 0
    assert not catalog.adapters_dir.exists() or not any(catalog.adapters_dir.iterdir())
    assert not marker.exists()


def test_pickles_are_refused_without_unpickling(catalog, corpus):
    folder, marker = corpus
    for name in ("payload.ckpt", "payload.pt", "payload.bin", "disguised-pickle.safetensors",
                 "disguised-zip.safetensors"):
        with pytest.raises(PickledFileError):
            catalog.import_file(folder / name)
    catalog.scan(folder)
    assert not marker.exists()


def test_scan_reports_bad_files_and_carries_on(catalog, corpus):
    folder, marker = corpus
    report = catalog.scan(folder)
    assert sorted(report.added) == ["good", "nan"]
    refused = {Path(problem.path).name: problem.message for problem in report.problems}
    assert set(refused) == set(HOSTILE)
    for name, words in HOSTILE.items():
        assert words in refused[name] and "\n" not in refused[name]
    again = catalog.scan(folder)
    assert again.unchanged == 2 and len(again.problems) == len(HOSTILE)
    assert not marker.exists()


def test_nan_adapter_is_catalogued_but_refused_for_applying(catalog, corpus):
    from pipeline.toy_base import new_unet

    folder, _ = corpus
    catalog.scan(folder)
    adapter = catalog.load_adapter("nan")
    with pytest.raises(IncompatibleAdapterError, match="NaN or infinite"):
        check_applicable(adapter, {"unet": new_unet()}, name="nan")
    check_applicable(catalog.load_adapter("good"), {"unet": new_unet()}, name="good")


def test_cli_import_of_a_bad_file_exits_nonzero(corpus, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(catalog_module, "STARTER_DIR", tmp_path / "no-starters")
    folder, marker = corpus
    names = ("payload.ckpt", "huge-header.safetensors", "mismatched-ranks.safetensors", "escaping-link.safetensors")
    for name in names:
        assert main(["library", "import", str(folder / name)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("medley: ") and "\n" not in error and name in error
    assert not marker.exists()


def test_adapter_config_beside_plain_peft_must_be_sane(catalog, tmp_path):
    folder = tmp_path / "peft"
    folder.mkdir()
    save_file({"base_model.model.conv_in.lora_A.weight": torch.ones(2, 4, 3, 3),
               "base_model.model.conv_in.lora_B.weight": torch.ones(64, 2, 1, 1)},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterFileError, match="adapter_config.json"):
        catalog.import_file(folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 1}))
    record = catalog.import_file(folder / "adapter_model.safetensors")
    assert record.format == "peft" and record.targets == ["unet.conv_in"]
    assert catalog.load_adapter(record.name).modules["unet.conv_in"].alpha == 1.0


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_one_non_finite_entry_anywhere_is_refused_by_module(bad):
    from fusion.testing import random_lora
    from pipeline.toy_base import new_unet

    unet = new_unet()
    adapter = random_lora(unet, 4, seed=0)
    first, target = sorted(adapter.modules)[0], sorted(adapter.modules)[-1]
    adapter.modules[target].up[-1, -1] = bad
    adapter.modules[first].down.data = adapter.modules[first].down.half()  # mixed dtypes are checked too
    with pytest.raises(IncompatibleAdapterError, match=f"{target} up holds NaN or infinite"):
        check_applicable(adapter, {"unet": unet}, name="bad")
