"""Built-in base layouts kept on disk, so that a process does not rebuild four meta-device models each
time it starts (several seconds of importing and constructing diffusers and transformers models).

A layout is stored as JSON under ``$MEDLEY_CACHE/layouts`` (default ``$XDG_CACHE_HOME/medley`` or
``~/.cache/medley``), named by a hash of the base's config, the installed diffusers and transformers
versions (module names follow them) and this file's format version; anything unreadable is rebuilt. A
folder that cannot be written is fine: the layout is then built in every process, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
CACHE_ENV = "MEDLEY_CACHE"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "layouts"
    base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return base / "medley" / "layouts"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def cache_path(base: str, config: Any) -> Path:
    document = {"base": base, "config": config, "format": FORMAT_VERSION,
                "diffusers": _version("diffusers"), "transformers": _version("transformers")}
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / f"{base}-{digest}.json"


def encode(layout: Any) -> dict[str, Any]:
    return {
        "name": layout.name,
        "modules": {component: [[path, s.out_features, s.in_features, list(s.kernel) if s.kernel else None]
                                for path, s in shapes.items()] for component, shapes in layout.modules.items()},
        "flat_index": layout.flat_index,
        "conventional": layout.conventional,
    }


def read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    required = ("name", "modules", "flat_index", "conventional")
    return document if isinstance(document, dict) and all(k in document for k in required) else None


def write(path: Path, document: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream)
        os.replace(temporary, path)
    except OSError:
        return
