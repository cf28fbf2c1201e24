"""The retrieval facade: ``Retriever(records).search(prompt)`` and ``.plan(prompt)``.

It keeps an :class:`~retrieval.index.AdapterIndex` of the records' description embeddings in
``<home>/index/`` (``MEDLEY_HOME`` by default): opened if saved, rebuilt if it was built by
another embedder, and synced by diffing {id: key} when the catalogue changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from library.records import AdapterRecord
from retrieval.composer import ComposerConfig, compose
from retrieval.concepts import split_concepts
from retrieval.embedders.base import Embedder
from retrieval.index import DEFAULT_HNSW_THRESHOLD, AdapterIndex, IndexDiff, entry_key
from retrieval.paths import index_dir
from retrieval.plan import Plan
from retrieval.refiner import Describer, default_describer, description_hash
from retrieval.scoring import PhraseIndex, Scored, TermIndex, base_compatible, content_words, score_candidate

log = logging.getLogger(__name__)
MAX_PHRASE_CANDIDATES = 64  # adapters added as candidates because a concept quotes their description


@dataclass(frozen=True)
class Result:
    """One search hit."""

    name: str
    id: int
    score: float
    similarity: float
    kind: str
    base: str
    triggers: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass
class SyncReport:
    rebuilt: bool = False  # the whole index was (re)built (none saved, another embedder, unreadable)
    diff: IndexDiff = field(default_factory=IndexDiff)
    embedded: int = 0
    seconds: float = 0.0


class Retriever:
    """Prompt -> adapters over a list of catalogue records.

    ``embedder`` defaults to the bundled MiniLM :class:`~retrieval.embedders.text.TextEmbedder`;
    ``home`` to ``MEDLEY_HOME``; ``persist=False`` keeps the index in memory only.
    ``describer`` turns a record into the text that is embedded (default
    :func:`retrieval.refiner.default_describer`: :func:`~retrieval.refiner.describe` plus the zero-shot
    tags of the previews where the toy CLIP is available, kept in the index folder; pass a closure to add file
    metadata or Civitai info).
    """

    def __init__(
        self,
        records: Iterable[AdapterRecord],
        embedder: Embedder | None = None,
        home: str | Path | None = None,
        *,
        describer: Describer | None = None,
        persist: bool = True,
        index_name: str = "adapters",
        index_kind: str = "auto",
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        config: ComposerConfig = ComposerConfig(),
    ) -> None:
        if embedder is None:
            from retrieval.embedders.text import TextEmbedder

            embedder = TextEmbedder()
        self.embedder = embedder
        self.home = home
        # a persisted index keeps the preview tags beside it: describing the library then needs no CLIP
        self.describer = describer if describer is not None else default_describer(
            cache_dir=self._directory() if persist else None)
        self.persist = persist
        self.index_name = index_name
        self.index_kind = index_kind
        self.hnsw_threshold = hnsw_threshold
        self.config = config
        self.records: dict[int, AdapterRecord] = {}
        self.descriptions: dict[int, str] = {}
        self.terms = TermIndex()
        self.phrases = PhraseIndex()
        self.index = self._open()
        self.last_sync = self.sync(records)

    # -- index upkeep ------------------------------------------------------------------------
    def _directory(self) -> Path:
        return index_dir(self.home)

    def _fresh_index(self) -> AdapterIndex:
        return AdapterIndex(
            self.embedder.name, self.embedder.dimension, kind=self.index_kind, hnsw_threshold=self.hnsw_threshold
        )

    def _open(self) -> AdapterIndex:
        self._rebuilt = True
        if not self.persist:
            return self._fresh_index()
        saved = AdapterIndex.load(self._directory(), self.index_name)
        if saved is None:
            return self._fresh_index()
        if saved.embedder_name != self.embedder.name or saved.dimension != self.embedder.dimension:
            log.info("index was built by %s (%d-d); rebuilding for %s", saved.embedder_name, saved.dimension,
                     self.embedder.name)
            return self._fresh_index()
        self._rebuilt = False
        saved.requested_kind, saved.hnsw_threshold = self.index_kind, self.hnsw_threshold  # govern later edits
        return saved

    def sync(self, records: Iterable[AdapterRecord]) -> SyncReport:
        """Make the index hold exactly ``records`` (by id, file hash and description); save if it changed."""
        started = time.perf_counter()
        records = list(records)
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("records must have distinct ids")
        self.records = {r.id: r for r in records}
        self.descriptions = {r.id: self.describer(r) for r in records}
        self.terms = TermIndex(records)
        self.phrases = PhraseIndex(self.descriptions)
        wanted = {r.id: entry_key(r.sha256, description_hash(self.descriptions[r.id])) for r in records}
        diff = self.index.diff(wanted)
        rebuilt, self._rebuilt = self._rebuilt, False
        if diff.removed or diff.changed:
            self.index.remove([*diff.removed, *diff.changed])
        todo = [*diff.added, *diff.changed]
        for start in range(0, len(todo), 4096):
            chunk = todo[start : start + 4096]
            vectors = self.embedder.embed([self.descriptions[i] for i in chunk])
            self.index.add(chunk, vectors, [wanted[i] for i in chunk])
        if self.persist and (rebuilt or not diff.empty):
            self.index.save(self._directory(), self.index_name)
        report = SyncReport(rebuilt, diff, len(todo), time.perf_counter() - started)
        if not diff.empty:
            log.info("index synced: +%d -%d ~%d", len(diff.added), len(diff.removed), len(diff.changed))
        return report

    # -- candidates --------------------------------------------------------------------------
    def _neighbours(self, vectors: np.ndarray, k: int, base: str | None) -> list[dict[int, float]]:
        """Per query, up to ``k`` base-compatible {id: similarity}, widening the search as needed."""
        results: list[dict[int, float]] = [{} for _ in range(len(vectors))]
        pending = list(range(len(vectors)))
        fetch = k if base is None else 2 * k
        while pending:
            scores, ids = self.index.search(vectors[pending], fetch)
            still = []
            for row, query in enumerate(pending):
                found = {
                    int(i): float(s)
                    for s, i in zip(scores[row], ids[row], strict=True)
                    if i >= 0 and base_compatible(self.records[int(i)], base)
                }
                results[query] = dict(list(found.items())[:k])
                exhausted = fetch >= len(self.index) or ids[row][-1] < 0
                if len(found) < k and not exhausted:
                    still.append(query)
            pending, fetch = still, fetch * 4
        return results

    def _score(
        self, texts: Sequence[str], kind_hints: Sequence[str | None], k: int, base: str | None
    ) -> list[list[Scored]]:
        vectors = self.embedder.embed(list(texts))
        neighbours = self._neighbours(vectors, k, base)
        out: list[list[Scored]] = []
        for text, hint, vector, found in zip(texts, kind_hints, vectors, neighbours, strict=True):
            matches = self.terms.find(text)
            quoted = set(self.phrases.find(text))  # candidates the embedding alone can rank too far down
            phrased = sorted(quoted - set(matches))[:MAX_PHRASE_CANDIDATES]
            extra = [i for i in [*matches, *phrased] if i not in found and base_compatible(self.records[i], base)]
            if extra:
                found = found | dict(zip(extra, (self.index.vectors(extra) @ vector).tolist(), strict=True))
            words = content_words(text)
            out.append(
                [
                    score_candidate(
                        self.records[i],
                        similarity,
                        concept_words=words,
                        description=self.descriptions[i],
                        matches=matches.get(i, ()),
                        kind_hint=hint,
                        quoted=i in quoted,
                        config=self.config.scoring,
                    )
                    for i, similarity in found.items()
                ]
            )
        return out

    # -- public API --------------------------------------------------------------------------
    def search(self, prompt: str, k: int = 5, base: str | None = None) -> list[Result]:
        """The ``k`` best adapters for the whole prompt (no threshold), best first."""
        if not prompt.strip() or len(self.index) == 0:
            return []
        [scored] = self._score([prompt], [None], max(k, self.config.candidates_per_concept), base)
        scored.sort(key=lambda s: (-s.score, s.id))
        results = []
        for item in scored[:k]:
            record = self.records[item.id]
            results.append(
                Result(record.name, record.id, item.score, item.similarity, record.kind, record.base,
                       tuple(record.triggers), item.reasons)
            )
        return results

    def plan(self, prompt: str, base: str | None = None, batch: int = 1, seed: int = 0) -> Plan:
        """Split the prompt into concepts, score candidates per concept and compose a plan."""
        concepts = split_concepts(prompt)
        if concepts and len(self.index):
            scored = self._score([c.text for c in concepts], [c.kind_hint for c in concepts],
                                 self.config.candidates_per_concept, base)
        else:
            scored = [[] for _ in concepts]
        return compose(prompt, concepts, scored, self.records, base=base, batch=batch, seed=seed,
                       config=self.config, embedder=self.embedder.name)
