"""Library cards: a preview thumbnail and a caption per catalogued adapter (display only)."""

from __future__ import annotations

import threading
import zlib
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from library.records import AdapterRecord

THUMB = 128
MAX_PREVIEW_BYTES = 32 * 1024 * 1024
_cache: dict[tuple[str, float], Image.Image] = {}
_cache_lock = threading.Lock()


def _placeholder(record: AdapterRecord) -> Image.Image:
    """A tile coloured from the name, with the name on it (for adapters without a preview)."""
    hue = zlib.crc32(record.name.encode()) & 0xFFFFFF
    colour = ((hue >> 16) & 0x7F) + 64, ((hue >> 8) & 0x7F) + 64, (hue & 0x7F) + 64
    image = Image.new("RGB", (THUMB, THUMB), colour)
    draw = ImageDraw.Draw(image)
    draw.text((8, THUMB // 2 - 12), record.name[:18], fill=(255, 255, 255))
    draw.text((8, THUMB // 2 + 4), record.kind, fill=(230, 230, 230))
    return image


def _load_preview(path: Path) -> Image.Image | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_PREVIEW_BYTES:
            return None
        with Image.open(path) as opened:
            if opened.width * opened.height > 40_000_000:
                return None
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    image.thumbnail((THUMB, THUMB), Image.Resampling.NEAREST if image.width <= 64 else Image.Resampling.LANCZOS)
    if image.width < THUMB:  # toy previews are tiny: scale up crisply
        image = image.resize((THUMB, THUMB), Image.Resampling.NEAREST)
    return image


def thumbnail(record: AdapterRecord) -> Image.Image:
    """The record's first readable preview as a THUMB x THUMB image (cached), else a placeholder."""
    for preview in record.previews:
        path = Path(preview)
        try:
            key = (str(path), path.stat().st_mtime)
        except OSError:
            continue
        with _cache_lock:
            cached = _cache.get(key)
        if cached is not None:
            return cached
        image = _load_preview(path)
        if image is not None:
            with _cache_lock:
                _cache[key] = image
            return image
    return _placeholder(record)


def caption(record: AdapterRecord) -> str:
    text = f"{record.name} · {record.kind} · {record.base}"
    if record.family != "lora":
        text += f" · {record.family}"
    if record.triggers:
        text += f" · {', '.join(record.triggers)}"
    return text


def summary(record: AdapterRecord) -> dict[str, Any]:
    """What a card and the API show of a record (no module list)."""
    return {
        "name": record.name,
        "title": record.title,
        "kind": record.kind,
        "base": record.base,
        "triggers": list(record.triggers),
        "preferred_weight": record.preferred_weight,
        "description": record.description,
        "rank": record.rank,
        "format": record.format,
        "family": record.family,
        "source": record.source,
        "id": record.id,
    }


def detail(record: AdapterRecord) -> dict[str, Any]:
    """Everything the detail view shows (the module list as a count)."""
    data = record.to_dict()
    data["modules"] = len(data.pop("targets"))
    data["file"] = data.pop("path")  # a "path" key reads as a file to gradio's clients
    return data


def gallery_items(records: list[AdapterRecord]) -> list[tuple[Image.Image, str]]:
    return [(thumbnail(record), caption(record)) for record in records]
