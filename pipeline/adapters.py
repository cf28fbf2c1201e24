"""Turn what a user asked for (``<lora:...>`` tags, ``--lora NAME:W`` picks, an automatic plan)
into the fusion engine's :class:`AdapterSpec` list, reading adapters from the catalogue.

Every face (CLI, web UI, Python API) resolves adapters here, so they agree on
precedence: a prompt tag beats a manual pick of the same adapter, which beats
an automatic pick; each adapter appears once. Trigger words of the chosen
adapters are added to the prompt when missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from fusion import AdapterSpec, LoraReference, add_triggers, parse_prompt
from library.catalog import Catalog
from library.records import AdapterRecord


@dataclass
class ResolvedAdapters:
    prompt: str  # the prompt without tags, trigger words added
    specs: list[AdapterSpec] = field(default_factory=list)
    records: list[AdapterRecord] = field(default_factory=list)


def parse_pick(text: str) -> LoraReference:
    """``NAME``, ``NAME:W`` or any A1111 tag body (``NAME:te=0.5:unet=1``), as given to ``--lora``."""
    _, references = parse_prompt(f"<lora:{text}>")
    return references[0]


def resolve_adapters(
    catalog: Catalog,
    prompt: str,
    picks: Iterable[LoraReference] = (),
    planned: Sequence[tuple[str, float, str]] = (),
    base_family: str | None = None,
    add_trigger_words: bool = True,
) -> ResolvedAdapters:
    """Resolve tags in ``prompt``, manual ``picks`` and ``planned`` (name, weight, role) picks.

    Raises ``AdapterNotFoundError`` (a ``LibraryError``) for an unknown name and ``ValueError``
    for an adapter made for another base than ``base_family``.
    """
    clean, tagged = parse_prompt(prompt)
    references: dict[str, LoraReference] = {}
    for reference in [*tagged, *picks]:
        references.setdefault(reference.alias.lower(), reference)
    for name, weight, _role in planned:
        references.setdefault(name.lower(), LoraReference(alias=name, weight=weight))
    resolved = ResolvedAdapters(prompt=clean)
    triggers: list[str] = []
    for reference in references.values():
        record = catalog.get(reference.alias)
        if base_family is not None and record.base not in (base_family, "unknown"):
            raise ValueError(f"adapter {record.name!r} is made for base {record.base!r}, the loaded base is "
                             f"{base_family!r}")
        adapter = catalog.load_adapter(record.id)
        adapter.metadata["medley.sha256"] = record.sha256
        # the catalogue's spelling of the name (a tag may be typed in another case, or by id)
        resolved.specs.append(AdapterSpec.from_reference(replace(reference, alias=record.name), adapter, record.kind))
        resolved.records.append(record)
        triggers.extend(record.triggers[:1])
    if add_trigger_words and triggers:
        resolved.prompt = add_triggers(clean, triggers)
    return resolved
