"""Image (and paired text) embeddings through open_clip, from local weights only.

open_clip (package ``open-clip-torch``, with torchvision) is a dependency of Medley; it is imported
on first use, and an environment without it (a hand-made install) gets a clear error here while
the rest of Medley runs.

A model folder holds ``open_clip_config.json`` (``{"model_cfg": {...}, "preprocess_cfg": {...}}``,
as open_clip writes for the hub) and ``open_clip_model.safetensors``. The default folder is
``assets/toy-clip/`` (written by the toy-CLIP training script).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embedders.base import folder_fingerprint, l2_normalise
from retrieval.embedders.text import EmbedderUnavailableError
from retrieval.paths import TOY_CLIP_DIR

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

_MODELS: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
_LOCK = threading.Lock()


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as error:
        raise EmbedderUnavailableError(
            "the image embedder needs open_clip: pip install open-clip-torch torchvision (a torchvision that matches "
            "the installed torch)"
        ) from error
    return open_clip


def _build(folder: Path, device: str) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) for a local open_clip folder."""
    open_clip = _import_open_clip()
    from safetensors.torch import load_file

    config = json.loads((folder / CONFIG_FILE).read_text())
    model_cfg = dict(config["model_cfg"])
    preprocess_cfg = dict(config.get("preprocess_cfg", {}))
    model_class = open_clip.CustomTextCLIP if model_cfg.pop("custom_text", False) else open_clip.CLIP
    model = model_class(**model_cfg)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    model.to(device).eval()
    vision_cfg = model_cfg.get("vision_cfg", {})
    image_size = preprocess_cfg.get("size", vision_cfg.get("image_size", 224))
    preprocess = open_clip.image_transform(
        image_size,
        is_train=False,
        mean=preprocess_cfg.get("mean"),
        std=preprocess_cfg.get("std"),
    )
    text_cfg = model_cfg.get("text_cfg", {})
    tokenizer_name = text_cfg.get("hf_tokenizer_name")
    context_length = int(text_cfg.get("context_length", 77))
    if tokenizer_name:
        tokenizer = open_clip.tokenizer.HFTokenizer(str(folder / tokenizer_name), context_length=context_length)
    else:
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    return model, preprocess, tokenizer


class ImageEmbedder:
    """CLIP-style embedder: ``embed_images`` for images and ``embed`` for texts, in one shared space.

    ``path`` is a local open_clip folder; ``None`` takes ``assets/toy-clip/``. A missing folder
    or a missing open_clip raises :class:`EmbedderUnavailableError` naming what to do.
    """

    def __init__(self, path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 32) -> None:
        folder = TOY_CLIP_DIR if path is None else Path(path).expanduser()
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
        if missing:
            hint = " (train it with the toy-CLIP script in training/)" if path is None else ""
            raise EmbedderUnavailableError(
                f"no open_clip model in {folder}: missing {', '.join(missing)}{hint}"
            )
        self.path = folder
        self.device = device
        self.batch_size = batch_size
        self._name = f"open_clip:{folder.name}:{folder_fingerprint(folder)}"
        config = json.loads((folder / CONFIG_FILE).read_text())
        self._dimension = int(config["model_cfg"]["embed_dim"])

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    def _parts(self) -> tuple[Any, Any, Any]:
        key = (str(self.path.resolve()), self.device)
        with _LOCK:
            if key not in _MODELS:
                _MODELS[key] = _build(self.path, self.device)
            return _MODELS[key]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Text-tower embeddings, [len(texts), dimension] float32, L2-normalised."""
        import torch

        model, _, tokenizer = self._parts()
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
                chunks.append(model.encode_text(tokens).float().cpu().numpy())
        return l2_normalise(np.concatenate(chunks))

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """Image-tower embeddings of PIL images or image paths, [n, dimension] float32, L2-normalised."""
        import torch
        from PIL import Image

        model, preprocess, _ = self._parts()
        if len(images) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = []
                for item in images[start : start + self.batch_size]:
                    image = item if isinstance(item, Image.Image) else Image.open(item)
                    batch.append(preprocess(image.convert("RGB")))
                pixels = torch.stack(batch).to(self.device)
                chunks.append(model.encode_image(pixels).float().cpu().numpy())
        return l2_normalise(np.concatenate(chunks))

    def __repr__(self) -> str:
        return f"ImageEmbedder({self.name!r})"
