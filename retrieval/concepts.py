"""Split a prompt into concept phrases, deterministically (Stylus asks an LLM; Medley uses rules).

Separators: commas, semicolons, ``|``, ``+``, sentence ends, and the joining words
`` and ``, `` with ``, `` in ``, `` on ``, `` over ``, `` under ``, `` next to ``, `` beside ``,
`` featuring ``, `` in the style of ``, `` in a ... style``. A phrase introduced by a
style marker (``in the style of``, ``style``, ``styled``, ``art by``) is hinted ``style``.
A1111 ``<lora:...>`` tags and ``(emphasis:1.2)`` weights are removed first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LORA_TAG = re.compile(r"<(?:lora|lyco|hypernet):[^>]*>", re.IGNORECASE)
_EMPHASIS = re.compile(r":\s*-?\d+(?:\.\d+)?\s*\)")
_STYLE_OPENERS = (
    r"in the style of", r"in the style", r"in style of", r"style of", r"art by", r"painted by", r"drawn by"
)
_JOINERS = (r"and", r"with", r"in", r"on", r"over", r"under", r"above", r"below", r"next to", r"beside", r"featuring",
            r"plus", r"against")
_PUNCTUATION = re.compile(r"\s*(?:[,;|+\n]|\.(?:\s|$))\s*")
_WORDS = re.compile(
    r"(?:^|\s+)(?P<style>" + "|".join(_STYLE_OPENERS) + r")(?:\s+|$)"
    r"|\s+(?:" + "|".join(_JOINERS) + r")\s+",
    re.IGNORECASE,
)
_STYLE_SUFFIX = re.compile(r"\b(?:style|styled|aesthetic|texture|textured|pattern|palette)$", re.IGNORECASE)
_LEADING = re.compile(r"^(?:(?:a|an|the|some|of|in|at|by)\s+)+", re.IGNORECASE)
_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


@dataclass(frozen=True)
class Concept:
    """One phrase of the prompt. ``text`` is what is embedded; ``start``/``end`` its span in the cleaned prompt."""

    text: str
    start: int
    end: int
    kind_hint: str | None = None  # "style" when the prompt marks the phrase as a style, else None


def clean_prompt(prompt: str) -> str:
    """The prompt without ``<lora:...>`` tags and ``(word:1.2)`` emphasis, whitespace collapsed."""
    text = _LORA_TAG.sub(" ", prompt)
    text = _EMPHASIS.sub(")", text).replace("(", " ").replace(")", " ").replace("[", " ").replace("]", " ")
    return re.sub(r"\s+", " ", text).strip()


def _trim(text: str) -> str:
    text = _PUNCT.sub("", text.strip())
    return _LEADING.sub("", text).strip()


def _chunks(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` between punctuation separators."""
    spans, position = [], 0
    for match in _PUNCTUATION.finditer(text):
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, len(text)))
    return spans


def split_concepts(prompt: str, max_concepts: int = 8) -> list[Concept]:
    """Concept phrases of ``prompt`` in order; empty phrases and exact repeats are dropped.

    Within one punctuation-delimited chunk, every phrase after a style opener is hinted ``style``
    (``in the style of picasso and monet`` gives two style phrases).
    """
    text = clean_prompt(prompt)
    concepts: list[Concept] = []
    seen: set[str] = set()
    for chunk_start, chunk_end in _chunks(text):
        chunk = text[chunk_start:chunk_end]
        position, style = 0, False
        for match in [*_WORDS.finditer(chunk), None]:
            end = match.start() if match is not None else len(chunk)
            phrase = _trim(chunk[position:end])
            if phrase and phrase.lower() not in seen:
                seen.add(phrase.lower())
                offset = chunk_start + chunk.find(phrase, position)
                hint = "style" if style or _STYLE_SUFFIX.search(phrase) else None
                concepts.append(Concept(phrase, offset, offset + len(phrase), hint))
            if match is None:
                break
            style = style or match.group("style") is not None
            position = match.end()
    return concepts[:max_concepts]
