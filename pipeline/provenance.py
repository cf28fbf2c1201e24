"""What made an image: settings and models, written into PNGs as A1111 does."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

MEDLEY_VERSION = "0.1.0"


@dataclass
class Provenance:
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    guidance: float
    seed: int
    width: int
    height: int
    model: str
    model_hash: str
    attention: str
    adapters: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    def parameters_text(self) -> str:
        """The A1111 ``parameters`` text: prompt, negative prompt, then a settings line."""
        settings = [
            f"Steps: {self.steps}",
            f"Sampler: {self.sampler}",
            f"CFG scale: {self.guidance:g}",
            f"Seed: {self.seed}",
            f"Size: {self.width}x{self.height}",
            f"Model hash: {self.model_hash}",
            f"Model: {self.model}",
        ]
        if self.adapters:
            hashes = ", ".join(f"{a['alias']}: {a.get('hash', '')}" for a in self.adapters)
            settings.append(f'Lora hashes: "{hashes}"')
        settings.append(f"Version: medley {MEDLEY_VERSION}")
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(", ".join(settings))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def save_png(image: Image.Image, provenance: Provenance, path: Path | str) -> Path:
    """Write ``image`` with the A1111 ``parameters`` chunk and Medley's JSON provenance."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", provenance.parameters_text())
    info.add_text("medley", json.dumps(provenance.to_dict()))
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_parameters(path: Path | str) -> str | None:
    """The ``parameters`` text of a PNG, or None if it has none."""
    with Image.open(path) as image:
        return image.text.get("parameters") if hasattr(image, "text") else None  # type: ignore[attr-defined]
