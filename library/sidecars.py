"""Files beside an adapter that describe it: A1111 previews/``.txt``/``.json`` and Civitai ``.civitai.info``.

Only regular files (no symlinks) are read, each with a size limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREVIEW_SUFFIXES: tuple[str, ...] = (".png", ".preview.png", ".jpg", ".jpeg", ".preview.jpg", ".preview.jpeg",
                                     ".webp", ".preview.webp")
TEXT_SUFFIX = ".txt"
A1111_JSON_SUFFIX = ".json"
CIVITAI_SUFFIX = ".civitai.info"
PEFT_CONFIG_SUFFIX = ".adapter_config.json"  # a PEFT LoraConfig kept beside an imported plain PEFT file
SIDECAR_SUFFIXES: tuple[str, ...] = (*PREVIEW_SUFFIXES, TEXT_SUFFIX, A1111_JSON_SUFFIX, CIVITAI_SUFFIX,
                                     PEFT_CONFIG_SUFFIX)
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_TEXT_BYTES = 1024 * 1024
MAX_PREVIEW_BYTES = 32 * 1024 * 1024


@dataclass
class Sidecars:
    """The sidecar files found for one adapter file (suffix -> path)."""

    files: dict[str, Path] = field(default_factory=dict)

    @property
    def previews(self) -> list[Path]:
        return [self.files[s] for s in PREVIEW_SUFFIXES if s in self.files]

    def get(self, suffix: str) -> Path | None:
        return self.files.get(suffix)


def _is_plain_file(path: Path, limit: int) -> bool:
    try:
        return not path.is_symlink() and path.is_file() and path.stat().st_size <= limit
    except OSError:
        return False


def find_sidecars(adapter_path: Path, listing: set[str] | None = None) -> Sidecars:
    """Sidecars of ``adapter_path``; ``listing`` (the names in its folder) saves a stat per candidate."""
    adapter_path = Path(adapter_path)
    stem = adapter_path.name[: -len(adapter_path.suffix)] if adapter_path.suffix else adapter_path.name
    found: dict[str, Path] = {}
    for suffix in SIDECAR_SUFFIXES:
        name = stem + suffix
        if listing is not None and name not in listing:
            continue
        candidate = adapter_path.with_name(name)
        limit = MAX_PREVIEW_BYTES if suffix in PREVIEW_SUFFIXES else MAX_JSON_BYTES
        if _is_plain_file(candidate, limit):
            found[suffix] = candidate
    return Sidecars(found)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a sidecar, or None when it is not one."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        value = json.loads(path.read_text(encoding="utf-8", errors="strict"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
