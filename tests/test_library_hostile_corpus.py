"""A hostile corpus of over 200 files grown from the real third-party adapters in /work/shared/real-adapters
(tests/faults/mutations.py: truncated at every section, lying lengths, dtypes, shapes and offsets, duplicate
keys, giant headers, NaN and infinity in the data). Each file is imported in a child process (so that even a
crash in a native reader could not take the test down) and must be refused with one clear line, a
LibraryError naming the file and what is wrong, leaving the catalogue as it was, or read; nothing else.

The originals include families Medley may not read yet (LoKr, cloneofsimo, textual inversion, a GPT-2 PEFT
adapter): a mutation that keeps a file's meaning is held to whatever its original does, read or refused.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from faults.mutations import corpus, write
from faults.processes import ROOT, child, child_env

SOURCES = Path("/work/shared/real-adapters")
MAX_MESSAGE = 400

pytestmark = pytest.mark.skipif(not SOURCES.is_dir(), reason="the real adapters are not on this machine")


def _clear(name: str, message: str) -> bool:
    """One line, short, naming the file."""
    return bool(message) and "\n" not in message and len(message) <= MAX_MESSAGE and name in message


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """(mutants, {file name: outcome}, scan summary) of the whole corpus, read by one child process."""
    root = tmp_path_factory.mktemp("hostile-corpus")
    mutants = corpus(SOURCES)
    paths = write(mutants, root / "corpus")
    (root / "files.json").write_text(json.dumps([str(path) for path in paths]))
    done = subprocess.run(child("hostile", str(root / "files.json"), str(root / "corpus"), str(root / "scan-home")),
                          cwd=ROOT, env=child_env(root / "home"), capture_output=True, text=True, timeout=900)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    opened = [line for line in done.stderr.splitlines() if line.startswith("opening ")]
    assert done.returncode == 0, f"the reader died ({done.returncode}) at {opened[-1:]}:\n{done.stderr[-2000:]}"
    results = {Path(line["file"]).name: line for line in lines if "file" in line}
    scans = [line["scan"] for line in lines if "scan" in line]
    assert len(results) == len(mutants) and len(scans) == 1
    return mutants, results, scans[0]


def test_the_corpus_is_large_and_deterministic(outcomes):
    mutants, _, _ = outcomes
    assert len(mutants) >= 200 and len({m.name for m in mutants}) == len(mutants)
    again = corpus(SOURCES)
    assert [(m.name, m.data, m.config) for m in again] == [(m.name, m.data, m.config) for m in mutants]
    assert all(path.stat().st_mode & 0o222 == 0 for path in SOURCES.rglob("*.safetensors"))  # untouched, read-only


def test_every_file_is_refused_with_one_clear_line_or_read(outcomes):
    mutants, results, _ = outcomes
    original = {m.source: results[m.name] for m in mutants if m.name == m.source}
    problems = []
    for mutant in mutants:
        result = results[mutant.name]
        outcome, message = result["outcome"], result.get("message", "")
        if outcome == "crash":
            problems.append(f"{mutant.name}: crashed with {result['error']}: {message}")
            continue
        if outcome == "refused":
            if not _clear(mutant.name, message):
                problems.append(f"{mutant.name}: unclear refusal {message!r}")
            if not result["unchanged"]:
                problems.append(f"{mutant.name}: the refusal changed the catalogue or the adapters folder")
        elif result["modules"] < 1 and not _clear(mutant.name, result.get("load_message", "")):
            problems.append(f"{mutant.name}: catalogued, but its weights neither load nor are refused clearly")
        if mutant.expect == "refuse" and (outcome != "refused" or not any(w in message.lower()
                                                                           for w in mutant.words)):
            problems.append(f"{mutant.name}: expected a refusal saying one of {mutant.words}, got {outcome} "
                            f"{message!r}")
        if mutant.expect == "same":
            first = original[mutant.source]
            if outcome != first["outcome"] or (outcome == "read" and result["modules"] != first["modules"]):
                problems.append(f"{mutant.name}: {outcome} {message!r}, but its original {first['outcome']}")
    counts = Counter(results[m.name]["outcome"] for m in mutants)
    assert not problems, f"{counts}: " + "\n".join(problems)
    assert counts["read"] >= 1 and counts["refused"] >= 190 and set(counts) <= {"read", "refused"}


def test_a_scan_of_the_corpus_refuses_the_same_files(outcomes):
    mutants, results, scan = outcomes
    refused = {name for name, result in results.items() if result["outcome"] == "refused"}
    problems = {Path(path).name: message for path, message in scan["problems"].items()}
    assert set(problems) == refused
    for name, message in problems.items():
        assert _clear(name, message), message
    assert scan["added"] + scan["duplicates"] == len(mutants) - len(refused)
