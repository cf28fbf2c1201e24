"""What is known about an adapter, gathered from every place it is written down.

Sources, most specific first: Medley's own header keys (``medley.*``), an A1111
sidecar ``<name>.json`` ("activation text", "preferred weight", "sd version",
"description", "notes") and ``<name>.txt`` (description), Civitai's
``<name>.civitai.info`` (trainedWords, baseModel, tags, description), ``modelspec.*``
(title, trigger_phrase, description, tags, architecture) and kohya's ``ss_*``
(ss_output_name, ss_tag_frequency, ss_training_comment, ss_base_model_version, ss_network_dim/alpha).
A textual inversion's tokens become its triggers (library/inspection.py).
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from library.base_names import base_from_text, hints_from_metadata, unique
from library.records import KINDS
from library.sidecars import A1111_JSON_SUFFIX, CIVITAI_SUFFIX, TEXT_SUFFIX, Sidecars, read_json, read_text

TOP_TAGS = 10
GENERIC_STEMS = frozenset({"adapter_model", "pytorch_lora_weights"})
MAX_DESCRIPTION = 4000
_TAG = re.compile(r"<[^>]{0,2000}>")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass
class AdapterInfo:
    """Descriptive fields of an adapter (see module docstring for where each comes from)."""

    name: str = ""
    title: str = ""
    triggers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str = ""
    notes: str = ""
    preferred_weight: float | None = None
    kind: str | None = None
    base_hints: list[str] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    network_dim: int | None = None  # kohya's declared rank and alpha (the tensors' own shapes decide)
    network_alpha: float | None = None


def alias(text: str) -> str:
    """A name usable in prompts (``<lora:NAME:0.8>``): no spaces, colons or brackets."""
    cleaned = _NAME_UNSAFE.sub("_", text.strip()).strip("._-")
    return cleaned[:120] or "adapter"


def split_words(values: Iterable[object]) -> list[str]:
    """Comma-separated phrases, stripped, without duplicates (case-insensitive)."""
    seen: set[str] = set()
    words: list[str] = []
    for value in values:
        if not isinstance(value, str):
            continue
        for word in value.split(","):
            word = " ".join(word.split())
            if word and word.lower() not in seen:
                seen.add(word.lower())
                words.append(word)
    return words


def plain_text(text: object) -> str:
    """HTML (Civitai descriptions) to plain text, bounded."""
    if not isinstance(text, str):
        return ""
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())[:MAX_DESCRIPTION]


def _json_list(text: str | None) -> list[object]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return [text]
    return value if isinstance(value, list) else [text]


def parse_tag_frequency(text: str | None) -> dict[str, dict[str, int]]:
    """kohya's ``ss_tag_frequency``: {dataset: {tag: count}} (bad entries dropped)."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    result: dict[str, dict[str, int]] = {}
    for dataset, tags in raw.items():
        if isinstance(tags, dict):
            result[str(dataset)] = {str(t): int(c) for t, c in tags.items() if isinstance(c, int | float)}
    return result


def top_tags(frequency: Mapping[str, Mapping[str, int]], count: int = TOP_TAGS) -> list[str]:
    totals: Counter[str] = Counter()
    for tags in frequency.values():
        for tag, n in tags.items():
            tag = " ".join(tag.replace("\\(", "(").replace("\\)", ")").split())  # booru captions escape brackets
            if tag:
                totals[tag] += n
    return [tag for tag, _ in sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]]


def _float(value: object) -> float | None:
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) < 1e6 else None


def _civitai_tags(raw: Mapping[str, Any]) -> list[object]:
    tags: list[object] = []
    model = raw.get("model")
    for source in (raw.get("tags"), model.get("tags") if isinstance(model, dict) else None):
        if isinstance(source, list):
            tags.extend(t.get("name") if isinstance(t, dict) else t for t in source)
    return tags


def gather_info(adapter_path: Path, metadata: Mapping[str, str], sidecars: Sidecars) -> AdapterInfo:
    """Everything known about the adapter at ``adapter_path`` with header ``metadata``."""
    stem = Path(adapter_path).name.removesuffix(Path(adapter_path).suffix)
    if stem in GENERIC_STEMS:  # a diffusers/PEFT output folder: its name says more than the file's
        stem = Path(adapter_path).parent.name or stem
    a1111 = read_json(sidecars.files[A1111_JSON_SUFFIX]) if A1111_JSON_SUFFIX in sidecars.files else None
    civitai = read_json(sidecars.files[CIVITAI_SUFFIX]) if CIVITAI_SUFFIX in sidecars.files else None
    text = read_text(sidecars.files[TEXT_SUFFIX]) if TEXT_SUFFIX in sidecars.files else None
    a1111 = a1111 or {}
    civitai = civitai or {}
    model = civitai.get("model") if isinstance(civitai.get("model"), dict) else {}
    frequency = parse_tag_frequency(metadata.get("ss_tag_frequency"))

    output_name = metadata.get("ss_output_name", "").strip()
    title_candidates = [metadata.get("modelspec.title"), model.get("name"), output_name, stem]
    title = next((str(t).strip()[:200] for t in title_candidates if isinstance(t, str) and t.strip()), stem)
    comment = metadata.get("ss_training_comment", "")  # kohya's free-text note from the trainer
    descriptions = [a1111.get("description"), text, plain_text(civitai.get("description")),
                    plain_text(model.get("description")), metadata.get("modelspec.description"),
                    comment if comment.strip().lower() not in ("", "none") else None]
    description = next((plain_text(d) for d in descriptions if isinstance(d, str) and d.strip()), "")
    weight = _float(a1111.get("preferred weight"))
    if not weight:  # A1111 writes 0 for "not set"
        weight = _float(metadata.get("medley.preferred_weight"))
    kind = metadata.get("medley.kind")
    trained = civitai.get("trainedWords")
    trained_words = trained if isinstance(trained, list) else []
    hints = [*hints_from_metadata(metadata), base_from_text(str(a1111.get("sd version", ""))),
             base_from_text(str(civitai.get("baseModel", "")))]
    return AdapterInfo(
        name=alias(output_name or stem),
        title=title,
        triggers=split_words([*_json_list(metadata.get("medley.triggers")), a1111.get("activation text"),
                              *trained_words, metadata.get("modelspec.trigger_phrase")]),
        tags=split_words([metadata.get("modelspec.tags"), *_civitai_tags(civitai), *top_tags(frequency)]),
        description=description,
        notes=str(a1111.get("notes", ""))[:MAX_DESCRIPTION] if isinstance(a1111.get("notes"), str) else "",
        preferred_weight=weight,
        kind=kind if kind in KINDS else None,
        base_hints=unique(h for h in hints if h),
        previews=[str(p) for p in sidecars.previews],
        tag_frequency=frequency,
        network_dim=int(dim) if (dim := _float(metadata.get("ss_network_dim"))) is not None else None,
        network_alpha=_float(metadata.get("ss_network_alpha")),
    )
