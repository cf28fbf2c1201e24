"""The refiner: an adapter's description, built offline and deterministically from its metadata.

Stylus improves sparse adapter cards with a VLM; Medley has no such model at hand, so it
assembles what the catalogue knows (title, alias, kind, description, trigger words, tags, the
most frequent training-caption tags from ``ss_tag_frequency``, sidecar notes, a Civitai
description) into one text to embed. Optional extra tags (e.g. CLIP zero-shot tags of the
previews, :mod:`retrieval.preview_tags`) are appended. The same record always gives the same text.

:func:`default_describer` is the describer of :class:`retrieval.search.Retriever`: it adds the
zero-shot tags of an adapter's previews over the toy world's labels when an open_clip model is at
hand (the toy CLIP of ``assets/toy-clip/``, or a given folder), and is plain :func:`describe` when
open_clip or the model is missing.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from library.records import AdapterRecord
from retrieval.preview_tags import preview_tagger

Describer = Callable[[AdapterRecord], str]

MAX_TAGS = 12
MAX_TRAINING_TAGS = 12
MAX_CHARS = 1200
_KIND_PHRASES = {"content": "subject (content) adapter", "style": "style adapter", "other": "adapter"}
_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+([.,;:!?])")
_WORD_SPLIT_RE = re.compile(r"[_\-.]+")


def clean_text(text: str) -> str:
    """Strip HTML tags and entities, collapse whitespace."""
    text = _SPACE_RE.sub(" ", html.unescape(_TAG_RE.sub(" ", text)))
    return _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text).strip()


def readable_name(name: str) -> str:
    """``heart_lora-v2`` -> ``heart lora v2``."""
    return _SPACE_RE.sub(" ", _WORD_SPLIT_RE.sub(" ", name)).strip()


def _unique(items: Iterable[str], limit: int | None = None) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        text = clean_text(str(item)).strip(" ,;")
        key = text.lower()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
            if limit is not None and len(out) >= limit:
                break
    return out


def training_tags(metadata: Mapping[str, str] | None, limit: int = MAX_TRAINING_TAGS) -> list[str]:
    """The most frequent tags of kohya's ``ss_tag_frequency`` (summed over its datasets), ties by name."""
    raw = (metadata or {}).get("ss_tag_frequency")
    if not raw:
        return []
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except (TypeError, ValueError):
        return []
    counts: Counter[str] = Counter()
    if isinstance(data, Mapping):
        for dataset in data.values():
            if isinstance(dataset, Mapping):
                for tag, count in dataset.items():
                    if isinstance(count, int | float):
                        counts[str(tag).strip()] += int(count)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return _unique((tag for tag, _ in ranked), limit)


def civitai_fields(info: Mapping[str, Any] | None) -> tuple[list[str], str]:
    """(trained words, description) from a Civitai ``.civitai.info`` / model-version JSON."""
    if not info:
        return [], ""
    words = [str(word) for word in info.get("trainedWords") or [] if isinstance(word, str)]
    parts = [info.get("description")]
    model = info.get("model")
    if isinstance(model, Mapping):
        parts.append(model.get("description"))
    text = " ".join(clean_text(part) for part in parts if isinstance(part, str) and part.strip())
    return words, text


def describe(
    record: AdapterRecord,
    *,
    metadata: Mapping[str, str] | None = None,
    civitai: Mapping[str, Any] | None = None,
    extra_tags: Sequence[str] = (),
    max_chars: int = MAX_CHARS,
) -> str:
    """The text Medley embeds for ``record``.

    ``metadata`` is the file's safetensors header metadata (for ``ss_tag_frequency``),
    ``civitai`` a Civitai info JSON, ``extra_tags`` anything else (zero-shot preview tags).
    """
    civitai_words, civitai_text = civitai_fields(civitai)
    title = clean_text(record.title) or readable_name(record.name)
    alias = readable_name(record.name)
    head = title if alias.lower() in title.lower() else f"{title} ({alias})"
    sentences = [f"{head}: {_KIND_PHRASES.get(record.kind, 'adapter')}"]
    descriptions = _unique([record.description, civitai_text])
    sentences.extend(descriptions)
    triggers = _unique([*record.triggers, *civitai_words])
    if triggers:
        sentences.append("trigger words: " + ", ".join(triggers))
    tags = _unique(record.tags, MAX_TAGS)
    if tags:
        sentences.append("tags: " + ", ".join(tags))
    used = {t.lower() for t in [*triggers, *tags]}
    trained = [t for t in training_tags(metadata) if t.lower() not in used]
    if trained:
        sentences.append("trained on: " + ", ".join(trained))
    notes = clean_text(record.notes)
    if notes:
        sentences.append(notes)
    extra = [t for t in _unique(extra_tags) if t.lower() not in used]
    if extra:
        sentences.append("looks like: " + ", ".join(extra))
    text = ". ".join(s.rstrip(". ") for s in sentences if s) + "."
    if len(text) > max_chars:
        text = text[: max_chars - 1].rsplit(" ", 1)[0] + "…"
    return text


def description_hash(text: str) -> str:
    """A short stable hash of a description (part of an index entry's key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- the retriever's describer ------------------------------------------------------------------


def default_describer(clip_path: str | Path | None = None, cache_dir: str | Path | None = None) -> Describer:
    """:func:`describe` plus the zero-shot tags of the previews (:func:`retrieval.preview_tags.preview_tagger`)
    where an open_clip model is available; with ``cache_dir`` the tags are kept on disk there."""
    tagger = preview_tagger(clip_path, cache_dir)
    if tagger is None:
        return describe

    def describer(record: AdapterRecord) -> str:
        return describe(record, extra_tags=tagger(record))

    return describer
