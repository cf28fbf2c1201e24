"""Two writers on one MEDLEY_HOME at once lose nothing: the CLI in one process and the web app's
MedleyServices in another, importing (into the same names), editing (the same adapters) and scanning;
and, step by step on two connections, a scan that runs while another writer edits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from safetensors.torch import save

from faults.processes import child, error_output, integrity, leftovers, start
from faults.synthetic import write_loras
from library.catalog import Catalog
from library.files import sha256_of
from library.synthetic import small_kohya_tensors

EDITED = 6  # adapters both processes edit (the CLI their notes, the web app their trigger words)
IMPORTS = 8  # files each process imports, every one under the name "clash"


def _finish(process: subprocess.Popen, what: str) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"the {what} process exited {process.returncode}:\n{error_output(process)}"
    return out.decode()


def test_cli_and_web_app_writing_at_once_lose_nothing(tmp_path):
    home = tmp_path / "home"
    shared = write_loras(tmp_path / "shared", EDITED, prefix="both")
    cli_scan = write_loras(tmp_path / "cli-scan", 250, prefix="cliscan")
    web_scan = write_loras(tmp_path / "web-scan", 250, prefix="webscan")
    cli_files = write_loras(tmp_path / "cli-imports", IMPORTS, prefix="cli", seed=1)
    web_files = write_loras(tmp_path / "web-imports", IMPORTS, prefix="web", seed=2)
    with Catalog(home) as catalog:
        catalog.scan(shared[0].parent)
        starters = len(catalog)

    cli_plan: list[list[str]] = [["library", "scan", str(cli_scan[0].parent)]]
    web_plan: list[dict[str, object]] = [{"op": "scan", "folder": str(web_scan[0].parent)}]
    for number in range(IMPORTS):
        cli_plan.append(["library", "import", str(cli_files[number]), "--name", "clash"])
        web_plan.append({"op": "import", "file": str(web_files[number]), "name": "clash"})
        target = shared[number % EDITED].stem
        cli_plan.append(["library", "edit", target, "--notes", f"cli {number}"])
        web_plan.append({"op": "edit", "adapter": target, "changes": {"triggers": [f"web{number}"]}})
    (tmp_path / "cli.json").write_text(json.dumps(cli_plan))
    (tmp_path / "web.json").write_text(json.dumps(web_plan))

    processes = {
        "CLI": start(child("cli-batch", str(tmp_path / "cli.json")), home, stdin=subprocess.PIPE),
        "web": start(child("web-batch", str(tmp_path / "web.json")), home, stdin=subprocess.PIPE),
    }
    for what, process in processes.items():  # both warmed up, then both go at once
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready", what
    for process in processes.values():
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
    _finish(processes["CLI"], "CLI")
    web_done = json.loads(_finish(processes["web"], "web").strip().splitlines()[-1])

    assert integrity(home / "catalog.sqlite") == "ok"
    with Catalog(home, register_starters=False) as catalog:
        records = catalog.list()
        by_sha = {record.sha256: record for record in records}
        for path in [*cli_files, *web_files, *cli_scan, *web_scan, *shared]:  # every file is there, once
            assert sha256_of(path) in by_sha, path.name
        assert len(records) == starters + 2 * IMPORTS + len(cli_scan) + len(web_scan)
        clashes = sorted(record.name for record in records if record.name.startswith("clash"))
        assert len(clashes) == 2 * IMPORTS and {entry["name"] for entry in web_done} <= set(clashes)
        for record in records:  # no copy overwrote another: each row's file holds that row's bytes
            assert sha256_of(Path(record.path)) == record.sha256, record.name
        for number in range(EDITED):  # the last edit of each process, both kept
            record = catalog.get(shared[number].stem)
            last = max(n for n in range(IMPORTS) if n % EDITED == number)
            assert record.notes == f"cli {last}" and record.triggers == [f"web{last}"], record
        copies = {Path(record.path).name for record in records if Path(record.path).parent == catalog.adapters_dir}
        assert sorted(p.name for p in catalog.adapters_dir.iterdir()) == sorted(copies)
        assert not leftovers(catalog.adapters_dir)


def test_a_scan_keeps_an_edit_made_while_it_ran(tmp_path):
    folder = tmp_path / "loras"
    paths = write_loras(folder, 3)
    home = tmp_path / "home"
    with Catalog(home, register_starters=False) as scanner, Catalog(home, register_starters=False) as editor:
        scanner.scan(folder)
        for path in paths:  # the files change: the next scan refreshes their rows
            path.write_bytes(save(small_kohya_tensors(seed=9), metadata={"ss_output_name": path.stem,
                                                                       "modelspec.trigger_phrase": "fromfile"}))

        def edit_meanwhile(done: int, _total: int, _path: str) -> None:
            if done == 1:  # the scan has read the rows and is reading files; another writer edits one
                editor.edit(paths[2].stem, triggers=["edited"], notes="kept")

        report = scanner.scan(folder, progress=edit_meanwhile)
        assert sorted(report.updated) == sorted(path.stem for path in paths)
        edited = editor.get(paths[2].stem)
        assert edited.triggers == ["edited"] and edited.notes == "kept"
        assert editor.get(paths[0].stem).triggers == ["fromfile"]
