"""The composer's output: per concept, the adapters to apply with weights, roles and triggers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from library.picks import Pick


@dataclass(frozen=True)
class PlannedAdapter:
    """One adapter in a plan. ``role`` is the record's kind (``content``, ``style``, ``other``)."""

    name: str
    id: int
    weight: float
    role: str
    triggers: tuple[str, ...]
    score: float
    similarity: float
    concept: int  # index into Plan.concepts
    reasons: tuple[str, ...] = ()

    def pick(self, concept: str = "") -> Pick:
        """The plan's choice as the core render service takes it (source ``auto``)."""
        return Pick(name=self.name, weight=self.weight, role=self.role, source="auto", concept=concept,
                    reasons=self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "weight": round(self.weight, 6),
            "role": self.role,
            "triggers": list(self.triggers),
            "score": round(self.score, 6),
            "similarity": round(self.similarity, 6),
            "concept": self.concept,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedAdapter:
        return cls(
            name=str(data["name"]),
            id=int(data["id"]),
            weight=float(data["weight"]),
            role=str(data["role"]),
            triggers=tuple(data.get("triggers", ())),
            score=float(data.get("score", 0.0)),
            similarity=float(data.get("similarity", 0.0)),
            concept=int(data.get("concept", 0)),
            reasons=tuple(data.get("reasons", ())),
        )


@dataclass(frozen=True)
class ConceptPlan:
    text: str
    kind_hint: str | None
    adapters: tuple[PlannedAdapter, ...]  # the full plan for this concept (image 0)


@dataclass(frozen=True)
class ImagePlan:
    """What image ``index`` of a batch uses: a mask per concept, the active adapters re-weighted, its prompt."""

    index: int
    prompt: str
    adapters: tuple[PlannedAdapter, ...]
    mask: tuple[tuple[bool, ...], ...]  # per concept, per adapter of that concept


@dataclass(frozen=True)
class Plan:
    prompt: str  # as given
    final_prompt: str  # with the trigger words of image 0's adapters added
    base: str | None
    concepts: tuple[ConceptPlan, ...]
    images: tuple[ImagePlan, ...]
    embedder: str = ""

    @property
    def adapters(self) -> tuple[PlannedAdapter, ...]:
        """Every adapter of the full plan, concept by concept."""
        return tuple(adapter for concept in self.concepts for adapter in concept.adapters)

    def picks(self, image: int = 0) -> list[Pick]:
        """The active adapters of one image of the batch (image 0: the full plan), as picks."""
        adapters = self.images[image].adapters if self.images else self.adapters
        return [a.pick(self.concepts[a.concept].text if a.concept < len(self.concepts) else "") for a in adapters]

    def prompts(self) -> list[str]:
        """One prompt per image of the batch."""
        return [image.prompt for image in self.images] or [self.final_prompt]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "final_prompt": self.final_prompt,
            "base": self.base,
            "embedder": self.embedder,
            "concepts": [
                {"text": c.text, "kind_hint": c.kind_hint, "adapters": [a.to_dict() for a in c.adapters]}
                for c in self.concepts
            ],
            "images": [
                {
                    "index": image.index,
                    "prompt": image.prompt,
                    "mask": [list(m) for m in image.mask],
                    "adapters": [a.to_dict() for a in image.adapters],
                }
                for image in self.images
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        concepts = tuple(
            ConceptPlan(
                text=str(c["text"]),
                kind_hint=c.get("kind_hint"),
                adapters=tuple(PlannedAdapter.from_dict(a) for a in c.get("adapters", [])),
            )
            for c in data.get("concepts", [])
        )
        images = tuple(
            ImagePlan(
                index=int(i["index"]),
                prompt=str(i["prompt"]),
                adapters=tuple(PlannedAdapter.from_dict(a) for a in i.get("adapters", [])),
                mask=tuple(tuple(bool(x) for x in m) for m in i.get("mask", [])),
            )
            for i in data.get("images", [])
        )
        return cls(
            prompt=str(data["prompt"]),
            final_prompt=str(data.get("final_prompt", data["prompt"])),
            base=data.get("base"),
            concepts=concepts,
            images=images,
            embedder=str(data.get("embedder", "")),
        )
