"""Embedders: text (sentence-transformers), image (open_clip, optional) and adapter weights."""

from retrieval.embedders.base import Embedder, l2_normalise
from retrieval.embedders.text import EmbedderUnavailableError, TextEmbedder, default_text_model_path

__all__ = ["Embedder", "EmbedderUnavailableError", "TextEmbedder", "default_text_model_path", "l2_normalise"]
