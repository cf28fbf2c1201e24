"""What a file holds, read from its header alone: one :class:`PlannedModule` per adapter module.

A plan names the tensors of each module and their shapes without loading any data, so the catalogue can
describe thousands of files quickly; ``read_adapter`` then loads exactly the tensors a plan names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from library.families.base import ALPHA, DORA_SCALE, MAGNITUDE
from library.families.embedding import PlannedEmbedding
from library.families.lora import MID
from library.layouts.model_layout import ModuleShape


@dataclass(frozen=True)
class PlannedModule:
    """One adapter module as a file stores it.

    ``name`` is the module name as written (dotted, or kohya-flattened when ``flat``), ``component`` is
    None when the file does not say (plain PEFT); ``family`` is the family of its update (lora, locon,
    loha, lokr, full, norm, ia3), ``keys`` maps each of its parameters (LyCORIS / kohya names:
    ``lora_down.weight``, ``hada_w1_a``, ``alpha``...) to the tensor key in the file; ``weight`` is the
    shape of the weight it updates (None when the header cannot tell: a norm, (IA)^3); ``rank`` the rank
    its trainer chose (0 when the family has none); ``alpha`` comes from a LoRA config (PEFT) when the
    file has no alpha tensor; ``target`` is the canonical ``<component>.<module path>`` once resolved.
    """

    name: str
    component: str | None
    flat: bool
    family: str
    keys: Mapping[str, str]
    weight: ModuleShape | None
    rank: int = 0
    alpha: float | None = None
    flat_in: bool = False
    target: str = ""

    @property
    def shape(self) -> ModuleShape | None:
        return self.weight

    @property
    def alpha_key(self) -> str | None:
        return self.keys.get(ALPHA)

    @property
    def decomposed(self) -> bool:
        """A DoRA: a magnitude vector beside the direction."""
        return DORA_SCALE in self.keys or MAGNITUDE in self.keys

    @property
    def label_family(self) -> str:
        """The family shown to people: ``dora`` for a weight-decomposed module, ``locon`` for a LoCon with a
        Tucker core, else its own."""
        if self.decomposed:
            return "dora"
        return "locon" if MID in self.keys else self.family


@dataclass
class AdapterPlan:
    """A whole file: its format, its modules by canonical target, header metadata and base hints;
    ``embeddings``: textual-inversion vectors it holds (a pure embedding file has no modules)."""

    format: str
    modules: dict[str, PlannedModule]
    metadata: dict[str, str] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)
    layout: str | None = None
    embeddings: list[PlannedEmbedding] = field(default_factory=list)

    @property
    def rank(self) -> int:
        """The largest rank a trainer chose (a file may mix ranks; 0 for full diffs and embeddings)."""
        return max((m.rank for m in self.modules.values()), default=0)

    @property
    def families(self) -> list[str]:
        found = {m.label_family for m in self.modules.values()}
        if self.embeddings:
            found.add("embedding")
        return sorted(found)

    @property
    def family(self) -> str:
        """``lora``, ``lokr``, ``embedding``, or several joined by ``+`` (``lora+embedding``)."""
        return "+".join(self.families) or "none"

    @property
    def tokens(self) -> list[str]:
        return list(dict.fromkeys(e.token for e in self.embeddings))

    def shapes(self) -> dict[str, ModuleShape]:
        """{target: updated weight shape} of every linear/conv module whose shape the header gives."""
        return {target: module.weight for target, module in self.modules.items() if module.weight is not None}
