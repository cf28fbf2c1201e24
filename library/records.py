"""One catalogue entry: what Medley knows about an adapter file (see library/catalog.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from library.vocabulary import BASES, KINDS

__all__ = ["BASES", "KINDS", "AdapterRecord"]


@dataclass
class AdapterRecord:
    """A catalogued adapter. ``name`` is the alias prompts use (``<lora:name:0.8>``)."""

    id: int
    sha256: str
    name: str
    title: str
    path: str
    format: str
    base: str
    rank: int
    targets: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str = ""
    preferred_weight: float = 0.8
    kind: str = "other"
    previews: list[str] = field(default_factory=list)
    added_at: str = ""
    notes: str = ""
    source: str = ""  # "starter", "import", "scan", "trained"
    size: int = 0
    mtime: float = 0.0
    # what kind of adapter the file holds (library/families): lora, locon, loha, lokr, full, dora, ia3, norm,
    # embedding (a textual inversion: tokens and vectors, no module updates), or several joined by "+"
    family: str = "lora"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
