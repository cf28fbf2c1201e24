"""The SQLite catalogue: scanning, importing, editing, removing, metadata and sidecars, the starter library."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from library import catalog as catalog_module
from library.catalog import Catalog, ensure_starter_library
from library.errors import AdapterNotFoundError, DuplicateAdapterError, LibraryError
from library.files import sha256_of
from library.formats import write_kohya
from library.metadata import AdapterInfo
from library.synthetic import random_adapter, small_kohya_tensors, write_small_kohya


@pytest.fixture
def catalog(medley_home, monkeypatch, tmp_path):
    monkeypatch.setattr(catalog_module, "STARTER_DIR", tmp_path / "no-starters")
    with Catalog() as opened:
        yield opened


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "loras"
    (folder / "sub").mkdir(parents=True)
    for index in range(3):
        write_small_kohya(folder / f"small{index}.safetensors", seed=index)
    write_kohya(random_adapter("toy", every=10), folder / "sub" / "toy-style.safetensors",
                AdapterInfo(name="toy style", triggers=["zqx pattern"], kind="style", tags=["pattern"]))
    return folder


def test_catalogue_lives_in_medley_home_in_wal_mode(catalog, medley_home):
    assert catalog.path == medley_home / "catalog.sqlite"
    with sqlite3.connect(catalog.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_scan_then_rescan_reads_only_changed_files(catalog, folder):
    calls: list[tuple[int, int]] = []
    report = catalog.scan(folder, progress=lambda done, total, _path: calls.append((done, total)))
    assert sorted(report.added) == ["small0", "small1", "small2", "toy_style"]
    assert calls[-1] == (4, 4)
    record = catalog.get("toy_style")
    assert (record.base, record.kind, record.format, record.rank) == ("toy", "style", "kohya", 4)
    assert record.triggers == ["zqx pattern"] and record.source == "scan"

    again = catalog.scan(folder)
    assert again.unchanged == 4 and not again.added and not again.updated

    revision = catalog.revision
    write_small_kohya(folder / "small1.safetensors", metadata={"ss_output_name": "renamed"}, seed=42)
    third = catalog.scan(folder)
    assert third.updated == ["small1"] and third.unchanged == 3
    assert catalog.get("small1").sha256 == sha256_of(folder / "small1.safetensors")
    assert [change.action for change in catalog.changed_since(revision)] == ["updated"]


def test_vanished_files_leave_the_catalogue(catalog, folder):
    catalog.scan(folder)
    (folder / "small0.safetensors").unlink()
    report = catalog.scan(folder)
    assert report.removed == ["small0"]
    assert catalog.find("small0") is None


def test_user_edits_survive_a_rescan_of_a_changed_file(catalog, folder):
    catalog.scan(folder)
    catalog.edit("toy_style", triggers=["mine"], preferred_weight=0.5, notes="keep")
    path = folder / "sub" / "toy-style.safetensors"
    write_kohya(random_adapter("toy", every=10, seed=7), path,
                AdapterInfo(name="toy style", triggers=["new"], kind="content", description="fresh"))
    catalog.scan(folder)
    record = catalog.get("toy_style")
    assert record.triggers == ["mine"] and record.preferred_weight == 0.5 and record.notes == "keep"
    assert record.kind == "content" and record.description == "fresh"  # not edited: refreshed from the file


def test_duplicate_content_is_reported_not_catalogued_twice(catalog, folder):
    (folder / "copy.safetensors").write_bytes((folder / "small0.safetensors").read_bytes())
    report = catalog.scan(folder)
    assert len(report.duplicates) == 1 and len(catalog) == 4


def test_names_are_unique(catalog, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for index in range(3):
        write_small_kohya(folder / f"f{index}.safetensors", metadata={"ss_output_name": "Same Name"}, seed=index)
    catalog.scan(folder)
    assert sorted(r.name for r in catalog.list()) == ["Same_Name", "Same_Name-2", "Same_Name-3"]
    assert catalog.get("same_name").name == "Same_Name"  # names match case-insensitively


def test_get_by_name_or_id_and_missing(catalog, folder):
    catalog.scan(folder)
    record = catalog.get("small2")
    assert catalog.get(record.id) == record == catalog.get(str(record.id))
    with pytest.raises(AdapterNotFoundError, match="nope"):
        catalog.get("nope")


def test_list_filters(catalog, folder):
    catalog.scan(folder)
    assert [r.name for r in catalog.list(kind="style")] == ["toy_style"]
    assert len(catalog.list(base="toy")) == 4
    assert catalog.list(base="sdxl") == []
    with pytest.raises(LibraryError, match="unknown base"):
        catalog.list(base="sd9")


def test_edit_checks_values(catalog, folder):
    catalog.scan(folder)
    edited = catalog.edit("small0", kind="content", title="Small", description="d", preferred_weight=1.2)
    assert (edited.kind, edited.title, edited.description, edited.preferred_weight) == ("content", "Small", "d", 1.2)
    with pytest.raises(LibraryError, match="kind"):
        catalog.edit("small0", kind="weird")
    with pytest.raises(LibraryError, match="weight"):
        catalog.edit("small0", preferred_weight=float("nan"))
    with pytest.raises(LibraryError, match="cannot edit"):
        catalog.edit("small0", sha256="x")


def test_import_copies_file_and_sidecars_and_leaves_the_original(catalog, tmp_path):
    source = tmp_path / "incoming"
    source.mkdir()
    path = write_small_kohya(source / "cool.safetensors")
    (source / "cool.preview.png").write_bytes(b"\x89PNG fake")
    (source / "cool.json").write_text(json.dumps({"activation text": "cool style, shiny", "preferred weight": 0.6,
                                                  "sd version": "SD1", "notes": "from a friend",
                                                  "description": "A cool LoRA"}))
    before = (sha256_of(path), path.stat().st_mtime_ns)
    record = catalog.import_file(path, kind="style")
    assert (sha256_of(path), path.stat().st_mtime_ns) == before
    copy = Path(record.path)
    assert copy.parent == catalog.adapters_dir and sha256_of(copy) == before[0]
    assert (copy.parent / "cool.preview.png").exists() and (copy.parent / "cool.json").exists()
    assert record.previews == [str(copy.parent / "cool.preview.png")]
    assert record.triggers == ["cool style", "shiny"] and record.preferred_weight == 0.6
    assert record.notes == "from a friend" and record.description == "A cool LoRA"
    assert record.kind == "style" and record.source == "import"
    with pytest.raises(DuplicateAdapterError, match="already in the library"):
        catalog.import_file(path)

    catalog.remove(record.name)
    assert not copy.exists() and not (copy.parent / "cool.preview.png").exists()
    assert path.exists() and (source / "cool.json").exists()


def test_remove_keeps_files_outside_medley_home(catalog, folder):
    catalog.scan(folder)
    revision = catalog.revision
    catalog.remove("small0")
    assert (folder / "small0.safetensors").exists()
    assert catalog.find("small0") is None
    assert [(c.action, c.name) for c in catalog.changed_since(revision)] == [("removed", "small0")]


def test_revision_tells_what_changed(catalog, folder):
    assert catalog.revision == 0
    catalog.scan(folder)
    after_scan = catalog.revision
    assert after_scan == 4
    catalog.edit("small1", notes="n")
    changes = catalog.changed_since(after_scan)
    assert [(c.action, c.name) for c in changes] == [("edited", "small1")]
    assert catalog.changed_since(catalog.revision) == []


def test_load_adapter_gives_the_canonical_form(catalog, folder):
    catalog.scan(folder)
    adapter = catalog.load_adapter("small0")
    expected = small_kohya_tensors(seed=0)
    target = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    assert torch.equal(adapter.modules[target].down,
                       expected["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"])
    assert adapter.modules[target].alpha == 2.0


def test_metadata_from_header_civitai_and_text_sidecars(catalog, tmp_path):
    folder = tmp_path / "meta"
    folder.mkdir()
    frequency = {"10_set": {"red hat": 9, "blue": 4, "zeta": 1}, "5_reg": {"blue": 6}}
    write_small_kohya(folder / "hat.safetensors", metadata={
        "ss_output_name": "red hat", "ss_tag_frequency": json.dumps(frequency), "ss_base_model_version": "sd_v1",
        "modelspec.title": "Red Hat", "modelspec.trigger_phrase": "rdht", "medley.kind": "content"})
    (folder / "hat.civitai.info").write_text(json.dumps({
        "trainedWords": ["rdht", "hat wearing"], "baseModel": "SD 1.5", "description": "<p>A <b>red</b> hat</p>",
        "model": {"name": "Red hats", "tags": ["clothing", {"name": "hat"}]}}))
    (folder / "hat.txt").write_text("plain description")
    (folder / "hat.webp").write_bytes(b"RIFF")
    catalog.scan(folder)
    record = catalog.get("red_hat")
    assert record.title == "Red Hat"
    assert record.triggers == ["rdht", "hat wearing"]
    assert record.tags[:3] == ["clothing", "hat", "blue"]  # civitai tags, then top ss_tag_frequency tags
    assert "red hat" in record.tags
    assert record.description == "plain description"  # the local .txt wins over Civitai's
    assert record.kind == "content"
    assert record.previews == [str(folder / "hat.webp")]


def test_civitai_description_and_base_when_nothing_local(catalog, tmp_path):
    folder = tmp_path / "civ"
    folder.mkdir()
    tensors = {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": torch.ones(2, 320, 3, 3),
               "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": torch.ones(320, 2, 1, 1)}
    save_file(tensors, str(folder / "res.safetensors"))
    (folder / "res.civitai.info").write_text(json.dumps({"baseModel": "SD 2.1", "description": "<p>x &amp; y</p>"}))
    catalog.scan(folder)
    record = catalog.get("res")
    assert record.description == "x & y"
    assert record.base == "sd2"  # shapes fit SD1 and SD2 alike; Civitai's baseModel decides


def test_starter_library_is_registered_once(medley_home, monkeypatch, tmp_path):
    starters = tmp_path / "starter-library"
    starters.mkdir()
    write_small_kohya(starters / "star-a.safetensors", seed=1)
    write_small_kohya(starters / "star-b.safetensors", seed=2)
    monkeypatch.setattr(catalog_module, "STARTER_DIR", starters)
    with Catalog() as catalog:
        assert sorted(r.name for r in catalog.list()) == ["star-a", "star-b"]
        assert {r.source for r in catalog.list()} == {"starter"}
        catalog.remove("star-a")
    assert (starters / "star-a.safetensors").exists()
    with Catalog() as catalog:
        assert [r.name for r in catalog.list()] == ["star-b"]  # a removed starter stays removed
    write_small_kohya(starters / "star-c.safetensors", seed=3)
    assert [r.name for r in ensure_starter_library()] == ["star-c"]


def test_missing_starter_folder_is_fine(medley_home, monkeypatch, tmp_path):
    monkeypatch.setattr(catalog_module, "STARTER_DIR", tmp_path / "absent")
    with Catalog() as catalog:
        assert len(catalog) == 0


def test_scan_of_a_missing_folder_is_an_error(catalog, tmp_path):
    with pytest.raises(LibraryError, match="not a folder"):
        catalog.scan(tmp_path / "absent")


def test_catalogue_is_shared_between_connections(catalog, folder):
    catalog.scan(folder)
    with Catalog(register_starters=False) as other:
        assert len(other) == 4
        other.edit("small0", notes="from elsewhere")
    assert catalog.get("small0").notes == "from elsewhere"
    assert os.path.exists(catalog.path)


def test_progress_bar_goes_to_stderr(catalog, folder, capsys):
    catalog.scan(folder, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "scanning" in captured.err


def test_declared_network_dim_and_alpha_are_read():
    from library.metadata import gather_info
    from library.sidecars import Sidecars

    info = gather_info(Path("x.safetensors"), {"ss_network_dim": "16", "ss_network_alpha": "8.0"}, Sidecars())
    assert (info.network_dim, info.network_alpha, info.name) == (16, 8.0, "x")
