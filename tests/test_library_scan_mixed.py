"""A scan of a messy library: 520 mixed files (every family, pickles, broken and foreign files, duplicates,
sidecars) plus the real third-party adapters when ../shared/real-adapters is there. Every adapter is
catalogued with its family, every refused file is listed with its reason (catalogue report, ``medley library
scan`` output, the web Library tab's refusal table), rescans are incremental, and search finds adapters by
what they draw (their ``ss_tag_frequency`` / Civitai words)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from library.catalog import Catalog
from library.files import sha256_of
from library.messy_library import CONCEPTS, GOOD_KINDS, build_messy_folder
from library.refusals import refusal_rows

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real-adapters"
REAL_REFUSED = {"pickled": "pickled", "other_lora": "not an adapter for", "peft_other": "not an adapter for"}


def _real_files() -> tuple[list[Path], dict[str, str]]:
    """The real adapter files to mix in, and the refusal word of those that must be refused."""
    manifest = REAL / "manifest.json"
    if not manifest.is_file():
        return [], {}
    entries = json.loads(manifest.read_text())
    refused = {f"real/{Path(e['file']).name}": REAL_REFUSED[e["family"]]
               for e in entries if e["family"] in REAL_REFUSED}
    return [REAL / e["file"] for e in entries], refused


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """(messy folder, catalogue, first scan report, real files refused) scanned once for the module."""
    root = tmp_path_factory.mktemp("messy")
    extra, real_refused = _real_files()
    messy = build_messy_folder(root / "library", count=520, seed=1, extra=extra)
    catalog = Catalog(root / "home", register_starters=False)
    report = catalog.scan(messy.folder)
    yield messy, catalog, report, real_refused
    catalog.close()


def test_every_family_is_catalogued_and_every_refusal_has_its_reason(scanned):
    messy, catalog, report, real_refused = scanned
    assert messy.files >= 500
    refused = {Path(p.path).relative_to(messy.folder).as_posix(): p.message for p in report.problems}
    expected_refused = {**messy.refused, **real_refused}
    assert set(refused) == set(expected_refused)
    for path, word in expected_refused.items():
        assert word in refused[path] and Path(path).name in refused[path] and "\n" not in refused[path]
    # a copy and its original: whichever the walk meets first is catalogued, the other reported beside its name
    assert len(report.duplicates) == len(messy.duplicates)
    by_sha = {r.sha256: r for r in catalog.list()}
    for path, name in report.duplicates:
        assert by_sha[sha256_of(Path(path))].name == name
    real_good = len(list((messy.folder / "real").glob("*.safetensors"))) - sum(
        1 for p in real_refused if p.endswith(".safetensors"))
    assert len(report.added) == len(messy.adapters) + real_good
    records = {path: by_sha[sha256_of(messy.folder / path)] for path in messy.adapters}
    for path, family in messy.families.items():
        assert records[path].family == family, path
    assert {family for _, family in GOOD_KINDS.values()} <= {r.family for r in records.values()}
    assert {"toy", "flux", "sd3", "sd1"} <= {r.base for r in records.values()}
    embeddings = [r for r in records.values() if r.family == "embedding"]
    assert embeddings and all(r.triggers and r.triggers[0] == Path(r.path).stem for r in embeddings)
    assert all(r.tags for r in records.values())  # what each draws, from ss_tag_frequency


def test_rescan_is_incremental(scanned):
    messy, catalog, report, _ = scanned
    again = catalog.scan(messy.folder)
    assert (again.added, again.updated, again.removed) == ([], [], [])
    assert again.unchanged == len(report.added) and len(again.duplicates) == len(report.duplicates)
    assert len(again.problems) == len(report.problems)
    changed = messy.folder / next(iter(messy.adapters))
    changed.write_bytes(changed.read_bytes()[:-4] + b"\0\0\0\0")  # new content, same header
    third = catalog.scan(messy.folder)
    assert len(third.updated) == 1 and not third.added


def test_cli_scan_lists_each_refused_file_with_its_reason(scanned, capsys, medley_home):
    from app.cli import main

    messy, _, report, _ = scanned
    assert main(["library", "scan", str(messy.folder)]) == 0
    out = capsys.readouterr().out
    assert f"refused ({len(report.problems)}):" in out
    for path, reason in refusal_rows(messy.folder, report.problems):
        assert f"{path}" in out and reason in out


def test_web_library_tab_shows_the_refusal_table(scanned):
    from app.web.library_tab import REFUSAL_HEADERS, scan_refusals

    messy, _, report, _ = scanned
    rows = scan_refusals(report)
    assert REFUSAL_HEADERS == ("file", "reason") and len(rows) == len(report.problems)
    assert rows == [list(row) for row in refusal_rows(messy.folder, report.problems)]
    assert all(not reason.startswith(Path(path).name) for path, reason in rows)


def test_search_finds_adapters_by_what_they_draw(scanned):
    from retrieval.embedders.hashing import HashingEmbedder
    from retrieval.search import Retriever

    messy, catalog, _, _ = scanned
    records = [r for r in catalog.list() if r.base == "toy"]
    retriever = Retriever(records, HashingEmbedder(), persist=False, describer=_describe)
    concept_of_sha = {sha256_of(messy.folder / path): concept for path, concept in messy.adapters.items()}
    concept_of = {r.name: concept_of_sha[r.sha256] for r in records}
    for concept in CONCEPTS[:4]:
        hits = retriever.search(f"a {concept}", k=3)
        assert hits and all(concept_of[hit.name] == concept for hit in hits), (concept, hits)


def _describe(record) -> str:
    from retrieval.refiner import describe

    return describe(record)
