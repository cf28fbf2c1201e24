"""Catalogue scan speed: ``python benchmarks/library_scan.py [--files 2000] [--json]``.

Writes N small synthetic LoRA files (toy base; kohya and diffusers-PEFT formats, some
with A1111 sidecars) to a temp folder, then times a first scan (header, sidecars,
base detection, sha256, SQLite row per file), a rescan with nothing changed, and a
rescan after changing 1% of the files. The one-off cost of building the known bases'
module tables (importing diffusers/transformers) is reported apart as warm-up.

Then a messy folder (``--mixed-files 520``, library/messy_library.py: every adapter family, pickles,
broken and foreign files, duplicates, sidecars; plus the real third-party adapters of
../shared/real-adapters when that folder exists): the headers of every candidate file planned alone
(files/s; target >= 200), the full first scan, and how many files crashed the reader (anything but a
one-line refusal; must be 0).
Uses a temporary MEDLEY_HOME; nothing of the user's is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from library.catalog import Catalog  # noqa: E402
from library.errors import AdapterFileError  # noqa: E402
from library.formats import plan_file  # noqa: E402
from library.layouts import known_layouts  # noqa: E402
from library.messy_library import build_messy_folder  # noqa: E402

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-adapters"
CANDIDATE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")

_MODULES = [  # (diffusers path, in, out) of the toy UNet
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 384, 128),
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", 384, 128),
    ("down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q", 192, 192),
    ("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", 384, 192),
    ("up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", 384, 192),
    ("up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2", 512, 128),
]


def write_file(folder: Path, index: int, rank: int = 4) -> None:
    generator = torch.Generator().manual_seed(index)
    tensors: dict[str, torch.Tensor] = {}
    kohya = index % 2 == 0
    for path, in_features, out_features in _MODULES:
        down = torch.randn(rank, in_features, generator=generator, dtype=torch.float32).half()
        up = torch.randn(out_features, rank, generator=generator, dtype=torch.float32).half()
        if kohya:
            name = "lora_unet_" + path.replace(".", "_")
            tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                        f"{name}.alpha": torch.tensor(float(rank))}
        else:
            tensors |= {f"unet.{path}.lora_A.weight": down, f"unet.{path}.lora_B.weight": up}
    metadata = {"ss_output_name": f"synthetic {index}", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
                "modelspec.architecture": "medley-toy/lora", "modelspec.trigger_phrase": f"trig{index}",
                "ss_tag_frequency": json.dumps({"1_data": {f"tag{index % 17}": 3, "shared": 1}})}
    stem = f"lora-{index:05d}"
    save_file(tensors, str(folder / f"{stem}.safetensors"), metadata=metadata)
    if index % 10 == 0:
        (folder / f"{stem}.json").write_text(json.dumps({"activation text": f"act{index}", "preferred weight": 0.7}))
        (folder / f"{stem}.txt").write_text(f"synthetic adapter {index}")


def mixed_folder(root: Path, count: int) -> dict[str, object]:
    """Header planning and a full scan over a messy folder of ``count`` files (plus the real adapters)."""
    real = sorted(p for p in REAL.rglob("*") if p.suffix in CANDIDATE_SUFFIXES) if REAL.is_dir() else []
    messy = build_messy_folder(root / "messy", count=count, seed=7, extra=real)
    candidates = sorted(p for p in messy.folder.rglob("*") if p.suffix in CANDIDATE_SUFFIXES)
    crashes: list[str] = []
    refused = 0
    started = time.perf_counter()
    for path in candidates:
        try:
            plan_file(path)
        except AdapterFileError:
            refused += 1
        except Exception as error:  # noqa: BLE001 - a crash is what this counts
            crashes.append(f"{path.name}: {type(error).__name__}: {error}")
    header_seconds = time.perf_counter() - started
    with Catalog(root / "mixed-home", register_starters=False) as catalog:
        scan = catalog.scan(messy.folder)
        families: dict[str, int] = {}
        for record in catalog.list():
            families[record.family] = families.get(record.family, 0) + 1
    return {
        "mixed_files": messy.files, "mixed_candidates": len(candidates), "mixed_real_files": len(real),
        "mixed_header_seconds": round(header_seconds, 3),
        "mixed_header_files_per_second": round(len(candidates) / header_seconds, 1),
        "mixed_refused_headers": refused, "mixed_crashes": len(crashes), "mixed_crash_examples": crashes[:5],
        "mixed_scan_seconds": round(scan.seconds, 3),
        "mixed_scan_files_per_second": round(scan.files_seen / scan.seconds, 1),
        "mixed_catalogued": len(scan.added), "mixed_duplicates": len(scan.duplicates),
        "mixed_problems": len(scan.problems), "mixed_families": families,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mixed-files", type=int, default=520, help="files of the messy folder (0: skip it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medley-scan-bench-") as temporary:
        root = Path(temporary)
        os.environ["MEDLEY_HOME"] = str(root / "home")
        folder = root / "loras"
        folder.mkdir()
        started = time.perf_counter()
        for index in range(args.files):
            write_file(folder, index)
        generate_seconds = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2**20

        started = time.perf_counter()
        known_layouts()
        warmup_seconds = time.perf_counter() - started

        with Catalog(register_starters=False) as catalog:
            first = catalog.scan(folder)
            second = catalog.scan(folder)
            changed = max(1, args.files // 100)
            for index in range(changed):
                write_file(folder, index * 100, rank=2)
            third = catalog.scan(folder)
            catalogued = len(catalog)
        mixed = mixed_folder(root, args.mixed_files) if args.mixed_files else {}

    result = {
        "files": args.files,
        "megabytes": round(size_mb, 1),
        "catalogued": catalogued,
        "problems": len(first.problems),
        "generate_seconds": round(generate_seconds, 2),
        "warmup_seconds": round(warmup_seconds, 2),
        "scan_seconds": round(first.seconds, 3),
        "scan_files_per_second": round(args.files / first.seconds, 1),
        "rescan_seconds": round(second.seconds, 3),
        "rescan_unchanged": second.unchanged,
        "changed_files": changed,
        "changed_rescan_seconds": round(third.seconds, 3),
        "changed_rescan_updated": len(third.updated),
        **mixed,
    }
    rows = [
        ("files (MB)", f"{args.files} ({result['megabytes']} MB)"),
        ("warm-up: module tables of known bases", f"{warmup_seconds:.2f} s"),
        ("first scan", f"{first.seconds:.2f} s  ({result['scan_files_per_second']} files/s)"),
        ("rescan, nothing changed", f"{second.seconds:.3f} s  ({second.unchanged} unchanged)"),
        (f"rescan, {changed} changed", f"{third.seconds:.3f} s  ({len(third.updated)} updated)"),
        ("catalogued / problems", f"{catalogued} / {len(first.problems)}"),
    ]
    if mixed:
        families: dict[str, int] = mixed["mixed_families"]  # type: ignore[assignment]
        rows += [
            ("mixed folder: files (candidates, real)",
             f"{mixed['mixed_files']} ({mixed['mixed_candidates']} adapters or pickles, "
             f"{mixed['mixed_real_files']} real)"),
            ("mixed: headers planned", f"{mixed['mixed_header_seconds']:.2f} s  "
                                       f"({mixed['mixed_header_files_per_second']} files/s, target >= 200)"),
            ("mixed: first scan", f"{mixed['mixed_scan_seconds']:.2f} s  ({mixed['mixed_scan_files_per_second']} "
                                  "files/s)"),
            ("mixed: catalogued / duplicates / refused", f"{mixed['mixed_catalogued']} / {mixed['mixed_duplicates']} / "
                                                         f"{mixed['mixed_problems']}"),
            ("mixed: crashes", str(mixed["mixed_crashes"])),
            ("mixed: families", ", ".join(f"{k} {v}" for k, v in sorted(families.items()))),
        ]
    width = max(len(label) for label, _ in rows)
    print("Library scan benchmark")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
