"""``kill -9`` of a web-app process (MedleyServices.import_upload -> Catalog.import_file) importing a
134 MB upload: while it copies, and just after it published the copy but before the row was committed.
Either way the next catalogue open leaves MEDLEY_HOME/adapters and the catalogue as they were, and the
file then imports under its own name. And any writer (training writes its adapter the same way) killed
mid-write leaves a temp file that the next open removes, while a live writer's is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from faults.processes import child, integrity, kill, leftovers, start, wait_for_pause, wait_until
from library.catalog import Catalog
from library.files import sha256_of

PREFIX = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
RANK = 65536  # one toy module at this rank: 134 MB of float32
PUBLISHED = {"calls": ["link", "replace"], "match": "/adapters/big", "when": "after"}


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "big.safetensors"
    save_file({f"{PREFIX}.lora_down.weight": torch.zeros(RANK, 384), f"{PREFIX}.lora_up.weight": torch.zeros(128, RANK),
               f"{PREFIX}.alpha": torch.tensor(1.0)}, str(path), metadata={"ss_output_name": "big"})
    return path


def _state(catalog: Catalog) -> tuple[int, int, list[str]]:
    listing = sorted(p.name for p in catalog.adapters_dir.iterdir()) if catalog.adapters_dir.is_dir() else []
    return len(catalog), catalog.revision, listing


def _staging(home: Path) -> bool:
    folder = home / "adapters"
    return folder.is_dir() and any(p.name.startswith(".importing-") for p in folder.iterdir())


@pytest.mark.parametrize("point", ["copying", "published"])
def test_kill_during_a_web_import(big_file, tmp_path, point):
    home = tmp_path / "home"
    with Catalog(home) as catalog:  # (registers the starter library, so the child only imports)
        before = _state(catalog)
    if point == "copying":
        process = start(child("web-import", str(big_file)), home)
        wait_until(process, lambda: _staging(home), "the upload's copy to appear in the adapters folder", every=0.001)
    else:
        process = start(child("web-import", str(big_file)), home, pause=PUBLISHED)
        wait_for_pause(process)
        assert (home / "adapters" / "big.safetensors").is_file()  # published, its row not committed
    kill(process)

    assert integrity(home / "catalog.sqlite") == "ok"
    with Catalog(home) as catalog:  # the next open sweeps what the killed import left
        assert not leftovers(catalog.adapters_dir)
        finished = catalog.find("big")
        if finished is None:  # (the kill lands while the copy is staged; a poller delayed past the commit
            assert _state(catalog) == before  # would find the import whole instead, which is as good)
            finished = catalog.import_file(big_file)
        else:
            assert point == "copying" and _state(catalog)[2] == sorted([*before[2], "big.safetensors"])
        assert finished.name == "big" and Path(finished.path).name == "big.safetensors"
        assert sha256_of(Path(finished.path)) == finished.sha256 == sha256_of(big_file)
    assert integrity(home / "catalog.sqlite") == "ok"


def test_a_killed_writer_leaves_nothing_and_a_live_one_is_left_alone(tmp_path):
    home = tmp_path / "home"
    target = home / "adapters" / "trained.safetensors"
    pause = {"calls": ["fsync"], "match": "trained.safetensors"}  # written whole, not yet renamed
    process = start(child("write", str(target), str(32 * 2**20)), home, pause=pause)
    wait_for_pause(process)
    with Catalog(home, register_starters=False) as catalog:  # the writer is alive: its temp file stays
        assert catalog.sweep() == [] and len(leftovers(catalog.adapters_dir)) == 1
    kill(process)
    with Catalog(home, register_starters=False) as catalog:
        assert not leftovers(catalog.adapters_dir) and not target.exists()
