"""How well one adapter fits one concept: embedding similarity plus exact-match and word evidence."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from library.records import AdapterRecord

_NON_WORD = re.compile(r"[^0-9a-z]+")
STOPWORDS = frozenset(
    "a an the of with and or in on at by to from for into onto over under is are be as its it this that "
    "some very".split()
)
# words that say what an adapter is, not what it shows
GENERIC = frozenset("style styled content subject concept lora lycoris locon adapter model version".split())
MAX_TERM_WORDS = 6
MIN_TERM_CHARS = 3
MIN_PHRASE_WORDS = 3  # a concept quoted from a description must hold this many content words


def normalise(text: str) -> str:
    """Lowercase words separated by single spaces (``Toy_Heart-v2`` -> ``toy heart v2``)."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def stem(word: str) -> str:
    """A light suffix strip so that ``stripes``/``striped``/``stripe`` meet."""
    for suffix in ("ing", "ies", "es", "ed", "s", "e"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def word_sequence(text: str) -> tuple[str, ...]:
    """The stemmed content words of ``text`` in order (what a quoted phrase is compared on)."""
    return tuple(stem(word) for word in normalise(text).split() if word not in STOPWORDS and word not in GENERIC)


def content_words(text: str) -> frozenset[str]:
    return frozenset(word_sequence(text))


def quotes(concept: Sequence[str], description: Sequence[str]) -> bool:
    """Whether the concept's content words (at least :data:`MIN_PHRASE_WORDS`) occur in this
    order, side by side, among the description's content words."""
    size = len(concept)
    if size < MIN_PHRASE_WORDS:
        return False
    return any(tuple(description[i : i + size]) == tuple(concept) for i in range(len(description) - size + 1))


def identity_words(record: AdapterRecord) -> frozenset[str]:
    """Content words of what names the adapter: title, name, tags and trigger words."""
    return content_words(" ".join([record.title, record.name, *record.tags, *record.triggers]))


def base_compatible(record: AdapterRecord, base: str | None) -> bool:
    """An adapter fits a base family when the families match or the adapter's is unknown."""
    return base is None or record.base in (base, "unknown")


@dataclass(frozen=True)
class ScoringConfig:
    trigger_boost: float = 0.5  # a trigger word of the adapter appears in the concept
    alias_boost: float = 0.3  # the adapter's name appears in the concept
    name_word_weight: float = 0.3  # times the share of the concept's words found in title/name/tags/triggers
    word_weight: float = 0.15  # times the share of the other concept words found in the description
    kind_bonus: float = 0.05  # concept hinted "style" and the adapter is a style (minus for content)
    phrase_boost: float = 0.3  # the concept quotes the adapter's description (3+ content words in order)


@dataclass(frozen=True)
class Scored:
    id: int
    score: float
    similarity: float
    reasons: tuple[str, ...]


class PhraseIndex:
    """Adapters whose description holds every content word of a concept (an inverted word index),
    so that a phrase quoted from a description finds its adapter even when the embedding of the
    whole description ranks it far down (a long description dilutes any one phrase)."""

    def __init__(self, descriptions: Mapping[int, str] | None = None) -> None:
        self._ids: dict[str, set[int]] = {}
        self._words: dict[int, tuple[str, ...]] = {}
        for adapter_id, description in (descriptions or {}).items():
            self.add(adapter_id, description)

    def add(self, adapter_id: int, description: str) -> None:
        self.remove(adapter_id)
        words = word_sequence(description)
        self._words[adapter_id] = words
        for word in set(words):
            self._ids.setdefault(word, set()).add(adapter_id)

    def remove(self, adapter_id: int) -> None:
        for word in set(self._words.pop(adapter_id, ())):
            ids = self._ids.get(word)
            if ids is not None:
                ids.discard(adapter_id)
                if not ids:
                    del self._ids[word]

    def find(self, text: str) -> list[int]:
        """Every id whose description quotes ``text`` (see :func:`quotes`), smallest first."""
        concept = word_sequence(text)
        if len(concept) < MIN_PHRASE_WORDS:
            return []
        postings = sorted((self._ids.get(word, set()) for word in set(concept)), key=len)
        common = set.intersection(*postings) if postings else set()
        return sorted(i for i in common if quotes(concept, self._words[i]))


class TermIndex:
    """Exact lookup of trigger words and adapter names (normalised, up to six words) in a text."""

    def __init__(self, records: Iterable[AdapterRecord] = ()) -> None:
        self._terms: dict[str, dict[int, str]] = {}
        self._by_id: dict[int, list[str]] = {}
        for record in records:
            self.add(record)

    def _put(self, term: str, adapter_id: int, kind: str) -> None:
        key = normalise(term)
        if len(key) < MIN_TERM_CHARS or len(key.split()) > MAX_TERM_WORDS:
            return
        entry = self._terms.setdefault(key, {})
        if entry.get(adapter_id) != "trigger":  # a trigger outranks an alias of the same text
            entry[adapter_id] = kind
        self._by_id.setdefault(adapter_id, []).append(key)

    def add(self, record: AdapterRecord) -> None:
        self.remove(record.id)
        for trigger in record.triggers:
            self._put(trigger, record.id, "trigger")
        self._put(record.name, record.id, "alias")

    def remove(self, adapter_id: int) -> None:
        for key in self._by_id.pop(adapter_id, []):
            entry = self._terms.get(key)
            if entry is not None:
                entry.pop(adapter_id, None)
                if not entry:
                    del self._terms[key]

    def find(self, text: str) -> dict[int, list[tuple[str, str]]]:
        """{adapter id: [(kind, term), ...]} for every term that occurs in ``text`` as whole words."""
        words = normalise(text).split()
        found: dict[int, list[tuple[str, str]]] = {}
        for size in range(1, min(MAX_TERM_WORDS, len(words)) + 1):
            for start in range(len(words) - size + 1):
                term = " ".join(words[start : start + size])
                for adapter_id, kind in self._terms.get(term, {}).items():
                    found.setdefault(adapter_id, []).append((kind, term))
        return found


def score_candidate(
    record: AdapterRecord,
    similarity: float,
    *,
    concept_words: frozenset[str],
    description: str,
    matches: Iterable[tuple[str, str]] = (),
    kind_hint: str | None = None,
    quoted: bool = False,
    config: ScoringConfig = ScoringConfig(),
) -> Scored:
    """score = similarity + trigger/alias boosts + word overlap + description quote + kind bonus;
    reasons say which applied. ``quoted``: the concept quotes the adapter's description."""
    score = float(similarity)
    reasons = [f"similarity {similarity:.3f}"]
    kinds: dict[str, list[str]] = {}
    for kind, term in matches:
        kinds.setdefault(kind, []).append(term)
    if "trigger" in kinds:
        score += config.trigger_boost
        reasons.append("trigger " + ", ".join(sorted(set(kinds["trigger"]))))
    if "alias" in kinds:
        score += config.alias_boost
        reasons.append("name " + ", ".join(sorted(set(kinds["alias"]))))
    if concept_words:
        named = concept_words & identity_words(record)
        described = (concept_words - named) & content_words(description)
        if named:
            score += config.name_word_weight * len(named) / len(concept_words)
            reasons.append("name words " + ", ".join(sorted(named)))
        if described:
            score += config.word_weight * len(described) / len(concept_words)
            reasons.append("described words " + ", ".join(sorted(described)))
    if quoted:
        score += config.phrase_boost
        reasons.append("quotes its description")
    if kind_hint == "style":
        if record.kind == "style":
            score += config.kind_bonus
            reasons.append("style wanted, style adapter")
        elif record.kind == "content":
            score -= config.kind_bonus
            reasons.append("style wanted, content adapter")
    return Scored(record.id, score, float(similarity), tuple(reasons))
