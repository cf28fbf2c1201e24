"""`medley library ...`: JSON output, filters, edits and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from library import catalog as catalog_module
from library.formats import write_kohya
from library.metadata import AdapterInfo
from library.synthetic import random_adapter, write_small_kohya


@pytest.fixture(autouse=True)
def no_starters(monkeypatch, tmp_path):
    monkeypatch.setattr(catalog_module, "STARTER_DIR", tmp_path / "no-starters")


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    write_small_kohya(folder / "plain.safetensors")
    write_kohya(random_adapter("toy", every=12), folder / "glow.safetensors",
                AdapterInfo(name="glow", triggers=["glw"], kind="style"))
    (folder / "broken.safetensors").write_bytes(b"\x00" * 3)
    return folder


def _json(capsys) -> object:
    return json.loads(capsys.readouterr().out)


def test_scan_list_show(folder, capsys):
    assert main(["library", "scan", str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert sorted(report["added"]) == ["glow", "plain"]
    assert [p["path"].endswith("broken.safetensors") for p in report["problems"]] == [True]
    assert "medley: skipped broken.safetensors" in captured.err

    assert main(["library", "list", "--json"]) == 0
    entries = _json(capsys)
    assert [e["name"] for e in entries] == ["glow", "plain"]
    for entry in entries:
        assert {"name", "base", "kind", "triggers", "format", "rank", "path"} <= set(entry)
    glow = entries[0]
    assert (glow["base"], glow["kind"], glow["triggers"], glow["format"], glow["rank"]) == \
        ("toy", "style", ["glw"], "kohya", 4)

    assert main(["library", "list", "--json", "--kind", "style"]) == 0
    assert [e["name"] for e in _json(capsys)] == ["glow"]
    assert main(["library", "list", "--json", "--base", "sdxl"]) == 0
    assert _json(capsys) == []

    assert main(["library", "show", "glow", "--json"]) == 0
    shown = _json(capsys)
    assert shown["name"] == "glow" and shown["targets"]

    assert main(["library", "list"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["NAME", "BASE", "KIND"] and "glw" in table


def test_edit_and_remove(folder, capsys):
    main(["library", "scan", str(folder)])
    capsys.readouterr()
    assert main(["library", "edit", "plain", "--trigger", "one", "--trigger", "two words", "--weight", "0.7",
                 "--kind", "content", "--notes", "hello", "--json"]) == 0
    edited = _json(capsys)
    assert edited["triggers"] == ["one", "two words"] and edited["preferred_weight"] == 0.7
    assert edited["kind"] == "content" and edited["notes"] == "hello"
    assert main(["library", "remove", "plain"]) == 0
    assert "removed plain" in capsys.readouterr().out
    assert (folder / "plain.safetensors").exists()
    assert main(["library", "show", "plain"]) == 2
    assert capsys.readouterr().err.strip() == "medley: no adapter named 'plain' in the library"


def test_import(folder, capsys, medley_home):
    assert main(["library", "import", str(folder / "glow.safetensors"), "--kind", "content", "--json"]) == 0
    record = _json(capsys)
    assert record["path"].startswith(str(medley_home / "adapters")) and record["kind"] == "content"
    assert main(["library", "import", str(folder / "glow.safetensors")]) == 2
    assert "already in the library" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["library", "import", "{folder}/broken.safetensors"],
    ["library", "import", "{folder}/missing.safetensors"],
    ["library", "scan", "{folder}/missing-folder"],
    ["library", "edit", "nobody", "--notes", "x"],
    ["library", "remove", "nobody"],
])
def test_errors_are_one_line_with_exit_code_2(folder, capsys, argv):
    assert main([arg.format(folder=folder) for arg in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medley: ")
    assert captured.out == ""


def test_bad_choice_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["library", "list", "--kind", "fancy"])
    assert caught.value.code == 2


def test_library_without_action_prints_help(capsys):
    assert main(["library"]) == 1
    assert "scan" in capsys.readouterr().out
