"""`medley doctor`: what Medley runs on and whether its state is sound, in one screen (or one JSON object).

Versions, the device and the attention backend generation would use, MEDLEY_HOME, the catalogue's
health (:mod:`library.health`), the index's (:mod:`retrieval.health`) and the optional extras, each
missing one with the pip command that adds it. It only looks: nothing is created or repaired, and
no model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "diffusers", "transformers", "peft")
# extra: (what it adds, its requirements when pyproject.toml does not declare it)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cuda": ("xformers attention on a CUDA device", ("xformers",)),
    "serve": ("the Ray Serve deployment", ("ray[serve]",)),
    "bench": ("benchmark plots", ("matplotlib",)),
    "dev": ("tests, lint and the browser test", ("pytest", "ruff", "playwright")),
}


def add_doctor_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "doctor", help="check the installation, the device and MEDLEY_HOME",
        description="Print versions, the device and attention backend, where MEDLEY_HOME is, whether the catalogue "
                    "and the search index are sound, and which optional extras are installed (with the pip command "
                    "for each missing one). Exit status 1 when the catalogue or the index is unhealthy.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=_run_doctor)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _declared_extras() -> dict[str, list[str]]:
    """Medley's extras as pyproject.toml (or, installed elsewhere, the package metadata) declares them."""
    try:
        return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    from packaging.requirements import Requirement

    declared: dict[str, list[str]] = {}
    for extra in metadata.metadata("medley").get_all("Provides-Extra") or []:
        declared[extra] = [str(r) for r in map(Requirement, metadata.requires("medley") or [])
                           if r.marker is not None and r.marker.evaluate({"extra": extra})]
    return declared


def _unmet(requirement: str) -> list[str]:
    """What of ``requirement`` (with its own extras) is not installed; [] when it is met."""
    from packaging.requirements import Requirement

    wanted = Requirement(requirement)
    found = _version(wanted.name)
    if found is None or (wanted.specifier and not wanted.specifier.contains(found, prereleases=True)):
        return [requirement]
    unmet: list[str] = []
    for extra in sorted(wanted.extras):
        for need in map(Requirement, metadata.requires(wanted.name) or []):
            if need.marker is not None and need.marker.evaluate({"extra": extra}) and _unmet(str(need).split(";")[0]):
                unmet.append(f"{wanted.name}[{extra}]: {need.name}")
    return unmet


def extras_report() -> dict[str, dict[str, Any]]:
    declared = _declared_extras()
    report: dict[str, dict[str, Any]] = {}
    for name, (purpose, fallback) in EXTRAS.items():
        requirements = declared.get(name, list(fallback))
        missing = [item for requirement in requirements for item in _unmet(requirement)]
        if name in declared:
            install = f'pip install -e "{ROOT}[{name}]"'
        else:
            install = "pip install " + " ".join(f'"{r}"' if "[" in r else r for r in requirements)
        report[name] = {"installed": not missing, "purpose": purpose, "requirements": requirements,
                        "missing": missing, "install": None if not missing else install}
    return report


def device_report() -> dict[str, Any]:
    import torch

    from pipeline.attention import choose_attention

    cuda = bool(torch.cuda.is_available())
    device: dict[str, Any] = {"type": "cuda" if cuda else "cpu", "cuda_available": cuda,
                              "torch_cuda": torch.version.cuda, "name": None, "count": 0}
    if cuda:
        device |= {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    else:
        device |= {"name": _cpu_name(), "count": os.cpu_count() or 1}
    return {"device": device, "attention": choose_attention(cuda)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def doctor_report() -> dict[str, Any]:
    from library.health import check_catalogue
    from library.home import HOME_ENV, medley_home_path
    from retrieval.health import check_index

    home = medley_home_path()
    catalogue = check_catalogue(home)
    ids = [record.id for record in catalogue.records or ()]
    if catalogue.records is None and catalogue.adapters:
        index_health = check_index(home, ids, None)  # rows this Medley cannot read yet: compare what it can
    else:
        index_health = check_index(home, ids, catalogue.records or ())
    report: dict[str, Any] = {
        "medley": _version("medley"),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "packages": {name: _version(name) for name in PACKAGES},
        **device_report(),
        "medley_home": {"path": str(home), "from": HOME_ENV if os.environ.get(HOME_ENV) else "default",
                        "exists": home.is_dir()},
        "catalogue": catalogue.to_dict(),
        "index": index_health.to_dict(),
        "extras": extras_report(),
    }
    report["healthy"] = catalogue.healthy and index_health.healthy
    return report


def _print_report(report: dict[str, Any]) -> None:
    device, home, python = report["device"], report["medley_home"], report["python"]
    if device["cuda_available"]:
        where = f"cuda: {device['name']}" + (f" (and {device['count'] - 1} more)" if device["count"] > 1 else "")
    else:
        built = f"torch built for CUDA {device['torch_cuda']}" if device["torch_cuda"] else "a CPU-only torch"
        where = f"cpu: {device['name']}, {device['count']} cores (no CUDA device; {built})"
    rows = [
        ("medley", f"{report['medley']} on Python {python['version']} ({python['executable']})"),
        ("packages", ", ".join(f"{name} {version or 'MISSING'}" for name, version in report["packages"].items())),
        ("device", where),
        ("attention", report["attention"]),
        ("MEDLEY_HOME", f"{home['path']} ({'from $MEDLEY_HOME' if home['from'] != 'default' else 'the default'}"
                        + ("" if home["exists"] else "; not created yet") + ")"),
        ("catalogue", f"{report['catalogue']['status']}: {report['catalogue']['message']}"),
        ("index", f"{report['index']['status']}: {report['index']['message']}"),
    ]
    for name, extra in report["extras"].items():
        if extra["installed"]:
            state = f"installed ({extra['purpose']})"
        else:
            state = f"missing {', '.join(extra['missing'])} ({extra['purpose']}): {extra['install']}"
            if name == "cuda" and not device["cuda_available"]:
                state += "  (useful only with a CUDA device)"
        rows.append((f"extra {name}", state))
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        print(f"{label:<{width}}  {text}")
    print("healthy" if report["healthy"] else "UNHEALTHY: see the catalogue and index lines above")


def _run_doctor(args: argparse.Namespace) -> int:
    report = doctor_report()
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    return 0 if report["healthy"] else 1
