"""`medley doctor`: versions, device, MEDLEY_HOME, catalogue and index health, extras; it only looks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from library.catalog import Catalog
from library.synthetic import write_small_kohya


def _doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["doctor", "--json"])
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.strip().splitlines()
    assert len(lines) == 1  # one JSON object
    return code, json.loads(lines[0])


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _catalogue_with_one_adapter(home: Path, tmp_path: Path) -> tuple[Catalog, int]:
    catalog = Catalog(home, register_starters=False)
    record = catalog.import_file(write_small_kohya(tmp_path / "glow.safetensors"), kind="style")
    return catalog, record.id


def test_fresh_home_reports_every_field_and_creates_nothing(medley_home: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _doctor(capsys)
    assert code == 0 and report["healthy"] is True
    assert report["medley"] == "0.1.0" and report["python"]["version"].startswith("3.")
    assert set(report["packages"]) == {"torch", "diffusers", "transformers", "peft"}
    assert all(report["packages"].values())
    assert report["device"]["type"] in ("cpu", "cuda") and report["device"]["name"]
    assert report["attention"] in ("sdpa", "xformers")
    if report["device"]["type"] == "cpu":
        assert report["attention"] == "sdpa"
    assert report["medley_home"] == {"path": str(medley_home), "from": "MEDLEY_HOME", "exists": False}
    assert report["catalogue"]["status"] == "missing" and report["catalogue"]["healthy"]
    assert report["index"]["status"] == "missing" and report["index"]["healthy"]
    assert set(report["extras"]) == {"cuda", "serve", "bench", "dev"}
    for extra in report["extras"].values():
        assert isinstance(extra["installed"], bool) and extra["requirements"]
        assert (extra["install"] is None) == extra["installed"]
        if not extra["installed"]:
            assert extra["install"].startswith("pip install ") and extra["missing"]
    assert report["extras"]["dev"]["installed"]  # the tests run, so pytest is here
    assert not medley_home.exists()


def test_sound_catalogue_and_matching_index(medley_home: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from retrieval import Retriever

    catalog, adapter_id = _catalogue_with_one_adapter(medley_home, tmp_path)
    Retriever(catalog.list(), home=medley_home)  # builds and saves the index, as a search does
    catalog.close()
    before = _files(medley_home)
    code, report = _doctor(capsys)
    assert code == 0 and report["healthy"]
    assert report["catalogue"]["status"] == "ok" and report["catalogue"]["adapters"] == 1
    assert report["catalogue"]["integrity"] == "ok"
    index = report["index"]
    assert index["status"] == "ok" and index["entries"] == 1 and index["embedder"] == index["expected_embedder"]
    assert index["missing"] == index["extra"] == index["changed"] == index["unchecked"] == []
    assert _files(medley_home) == before  # no -wal/-shm, no index folder files, nothing touched

    with Catalog(medley_home, register_starters=False) as catalog:
        catalog.remove(adapter_id)
    code, report = _doctor(capsys)
    assert code == 0 and report["index"]["status"] == "stale" and report["index"]["extra"] == [adapter_id]


def test_edited_description_makes_the_index_stale(medley_home: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from retrieval import Retriever

    catalog, adapter_id = _catalogue_with_one_adapter(medley_home, tmp_path)
    Retriever(catalog.list(), home=medley_home)
    catalog.edit(adapter_id, description="a soft glow around every shape")
    catalog.close()
    _, report = _doctor(capsys)
    assert report["index"]["status"] == "stale" and report["index"]["changed"] == [adapter_id]


def test_corrupted_catalogue_is_unhealthy(medley_home: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    catalog, _ = _catalogue_with_one_adapter(medley_home, tmp_path)
    catalog.close()
    path = medley_home / "catalog.sqlite"
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xff" * 4096  # a page of the tables overwritten
    path.write_bytes(bytes(data))
    code, report = _doctor(capsys)
    assert code == 1 and not report["healthy"]
    assert report["catalogue"]["status"] == "unhealthy" and not report["catalogue"]["healthy"]
    assert report["catalogue"]["message"]
    assert path.read_bytes() == bytes(data)  # left as it was, for the user to inspect

    path.write_bytes(b"this is not a database, just some text" * 200)
    code, report = _doctor(capsys)
    assert code == 1 and report["catalogue"]["status"] == "unhealthy"
    assert "not a database" in report["catalogue"]["message"]


def test_text_report_names_each_check(medley_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    labels = [line.split()[0] for line in out.splitlines() if line.strip()]
    for label in ("medley", "packages", "device", "attention", "MEDLEY_HOME", "catalogue", "index", "extra"):
        assert label in labels, out
    assert out.strip().splitlines()[-1] == "healthy"
