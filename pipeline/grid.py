"""Contact sheets: rows of images with their prompt, for looking at results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw


def save_grid(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str], path: Path | str, scale: int = 4) -> Path:
    """Write one row per label, images upscaled ``scale`` times (nearest) with the label on the left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = max(image.width for row in rows for image in row) * scale
    label_width = 6 * max((len(label) for label in labels), default=0) + 12
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (label_width + columns * (cell + 2), len(rows) * (cell + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = r * (cell + 2)
        draw.text((4, y + cell // 2 - 5), label, fill=(0, 0, 0))
        for c, image in enumerate(row):
            sheet.paste(image.resize((cell, cell), Image.NEAREST), (label_width + c * (cell + 2), y))
    sheet.save(path)
    return path
