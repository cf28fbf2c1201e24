"""Prompt -> adapters: embedders, the FAISS index, the refiner and the composer.

``Retriever(records).plan(prompt, base=..., batch=...)`` is the entry point; see
:mod:`retrieval.search`.
"""

from retrieval.composer import ComposerConfig, compose
from retrieval.concepts import Concept, split_concepts
from retrieval.embedders import Embedder, EmbedderUnavailableError, TextEmbedder
from retrieval.index import AdapterIndex, IndexDiff
from retrieval.plan import ConceptPlan, ImagePlan, Plan, PlannedAdapter
from retrieval.refiner import describe
from retrieval.scoring import ScoringConfig
from retrieval.search import Result, Retriever, SyncReport

__all__ = [
    "AdapterIndex",
    "ComposerConfig",
    "Concept",
    "ConceptPlan",
    "Embedder",
    "EmbedderUnavailableError",
    "ImagePlan",
    "IndexDiff",
    "Plan",
    "PlannedAdapter",
    "Result",
    "Retriever",
    "ScoringConfig",
    "SyncReport",
    "TextEmbedder",
    "compose",
    "describe",
    "split_concepts",
]
