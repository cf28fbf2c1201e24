"""The composer: scored candidates per concept -> a :class:`~retrieval.plan.Plan` (deterministic, no LLM).

Following Stylus: per concept keep the candidates above ``threshold`` and within
``relative_margin`` of the concept's best, at most ``max_per_concept`` (3), each adapter once
in the whole plan (it goes to the concept where it scores best); an adapter's weight is its
``preferred_weight`` divided by the number of adapters active in its concept. For a batch,
image 0 gets the full plan and every other image a seeded mask per concept: all, none, or one
adapter (one-hot), for diversity. Trigger words of the active adapters that the prompt lacks
are placed by :func:`library.triggers.add_triggers`, as generation places them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from library.records import AdapterRecord
from library.triggers import add_triggers
from retrieval.concepts import Concept
from retrieval.plan import ConceptPlan, ImagePlan, Plan, PlannedAdapter
from retrieval.scoring import Scored, ScoringConfig


@dataclass(frozen=True)
class ComposerConfig:
    threshold: float = 0.5  # minimum score (similarity + boosts) for an adapter to be used
    relative_margin: float = 0.12  # keep only candidates within this of the concept's best score
    max_per_concept: int = 3
    max_total: int | None = None  # cap on adapters in the whole plan (None: no cap)
    candidates_per_concept: int = 32  # nearest neighbours fetched from the index per concept
    triggers_per_adapter: int = 1  # trigger words added when the prompt has none of the adapter's
    scoring: ScoringConfig = ScoringConfig()


def plan_triggers(prompt: str, adapters: Sequence[PlannedAdapter], per_adapter: int = 1) -> str:
    """``prompt`` with the trigger words of ``adapters`` placed as generation places them."""
    return add_triggers(prompt, [adapter.triggers for adapter in adapters], per_adapter)


def select(
    scored: Sequence[Sequence[Scored]], config: ComposerConfig = ComposerConfig()
) -> list[list[Scored]]:
    """Per concept, the chosen candidates best first (threshold, margin, caps, each adapter once)."""
    best = [max((s.score for s in group), default=float("-inf")) for group in scored]
    pool = [
        (item, concept)
        for concept, group in enumerate(scored)
        for item in group
        if item.score >= config.threshold and item.score >= best[concept] - config.relative_margin
    ]
    pool.sort(key=lambda pair: (-pair[0].score, pair[0].id, pair[1]))
    chosen: list[list[Scored]] = [[] for _ in scored]
    used: set[int] = set()
    total = 0
    for item, concept in pool:
        if item.id in used or len(chosen[concept]) >= config.max_per_concept:
            continue
        if config.max_total is not None and total >= config.max_total:
            break
        chosen[concept].append(item)
        used.add(item.id)
        total += 1
    return chosen


def _weighted(
    items: Sequence[Scored], records: Mapping[int, AdapterRecord], concept: int
) -> tuple[PlannedAdapter, ...]:
    count = len(items)
    out = []
    for item in items:
        record = records[item.id]
        out.append(
            PlannedAdapter(
                name=record.name,
                id=record.id,
                weight=float(record.preferred_weight) / count,
                role=record.kind,
                triggers=tuple(record.triggers),
                score=item.score,
                similarity=item.similarity,
                concept=concept,
                reasons=item.reasons,
            )
        )
    return tuple(out)


def batch_masks(sizes: Sequence[int], batch: int, seed: int = 0) -> list[tuple[tuple[bool, ...], ...]]:
    """Per image, per concept, which of its adapters are active. Image 0 is all-on; image i > 0
    draws, per concept with adapters, all, none or one (one-hot) from a generator seeded by (seed, i)."""
    masks = [tuple(tuple(True for _ in range(n)) for n in sizes)]
    for image in range(1, batch):
        rng = random.Random(seed * 1_000_003 + image)
        per_concept = []
        for n in sizes:
            options: list[tuple[bool, ...]] = [(True,) * n, (False,) * n]
            if n > 1:
                options += [tuple(j == k for k in range(n)) for j in range(n)]
            per_concept.append(rng.choice(options))
        masks.append(tuple(per_concept))
    return masks[: max(batch, 1)]


def compose(
    prompt: str,
    concepts: Sequence[Concept],
    scored: Sequence[Sequence[Scored]],
    records: Mapping[int, AdapterRecord],
    *,
    base: str | None = None,
    batch: int = 1,
    seed: int = 0,
    config: ComposerConfig = ComposerConfig(),
    embedder: str = "",
) -> Plan:
    """Build the plan. ``scored[i]`` are the candidates of ``concepts[i]`` (already base-filtered)."""
    if len(scored) != len(concepts):
        raise ValueError(f"{len(concepts)} concepts but {len(scored)} candidate lists")
    chosen = select(scored, config)
    concept_plans = tuple(
        ConceptPlan(concept.text, concept.kind_hint, _weighted(items, records, index))
        for index, (concept, items) in enumerate(zip(concepts, chosen, strict=True))
    )
    images = []
    for index, mask in enumerate(batch_masks([len(items) for items in chosen], batch, seed)):
        active: list[PlannedAdapter] = []
        for concept_index, (items, keep) in enumerate(zip(chosen, mask, strict=True)):
            active.extend(_weighted([i for i, on in zip(items, keep, strict=True) if on], records, concept_index))
        images.append(ImagePlan(index, plan_triggers(prompt, active, config.triggers_per_adapter), tuple(active), mask))
    full = [adapter for concept in concept_plans for adapter in concept.adapters]
    return Plan(
        prompt=prompt,
        final_prompt=plan_triggers(prompt, full, config.triggers_per_adapter),
        base=base,
        concepts=concept_plans,
        images=tuple(images),
        embedder=embedder,
    )
