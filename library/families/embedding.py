"""Textual-inversion embeddings: new tokens and their vectors for a text encoder (no module updates).

Spellings met in files:

* diffusers ``learned_embeds.safetensors``: one tensor whose key is the token itself (``<detail-schemas>``),
  shape [d] or [n, d];
* A1111 / kohya: ``emb_params`` [n, d] or ``string_to_param.*`` [n, d] (the token is the file's name, as A1111
  uses it); SDXL: ``clip_l`` [n, 768] and ``clip_g`` [n, 1280] for the two text encoders;
* inside a LoRA: kohya's ``bundle_emb.<token>.<one of the above>`` and cloneofsimo's ``<s1>`` tensors whose
  header metadata value is ``"<embed>"``.

They are catalogued and shown (their tokens are the adapter's trigger words) as their own kind of adapter;
:func:`read_embeddings` loads the vectors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from library.errors import AdapterFileError

EMBED_MARK = "<embed>"  # cloneofsimo's metadata value for an embedded token
BUNDLE_PREFIX = "bundle_emb."
_A1111_KEYS = ("emb_params", "string_to_param.*", "string_to_param")
_SDXL_KEYS = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}
# text encoder width -> the base it belongs to (CLIP-L, OpenCLIP-H, the toy's MiniLM)
WIDTH_BASES: dict[int, str] = {768: "sd1", 1024: "sd2", 384: "toy"}


@dataclass(frozen=True)
class PlannedEmbedding:
    """One token's vectors for one text encoder, as the header declares them."""

    token: str
    encoder: str  # "text_encoder" or "text_encoder_2"
    key: str
    vectors: int
    width: int


@dataclass
class TextualInversion:
    """Loaded embeddings: {token: {encoder: [n, d] vectors}}."""

    tokens: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def _vectors(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(n, d) of a [d] or [n, d] vector block, else None."""
    if len(shape) == 1 and shape[0] > 0:
        return 1, shape[0]
    if len(shape) == 2 and shape[0] > 0 and shape[1] > 0:
        return shape[0], shape[1]
    return None


def _plain(token: str, key: str, shape: tuple[int, ...], encoder: str = "text_encoder") -> PlannedEmbedding | None:
    block = _vectors(shape)
    return None if block is None else PlannedEmbedding(token, encoder, key, block[0], block[1])


def _named(stem: str, key: str, shape: tuple[int, ...], name: str) -> PlannedEmbedding | None:
    if name in _SDXL_KEYS:
        return _plain(stem, key, shape, _SDXL_KEYS[name])
    if name in _A1111_KEYS:
        return _plain(stem, key, shape)
    return None


def find_embeddings(stem: str, shapes: Mapping[str, tuple[int, ...]],
                    metadata: Mapping[str, str]) -> list[PlannedEmbedding]:
    """Every embedding among the file's tensors (``shapes``: key -> shape). ``stem``: the token when the
    file does not name one (A1111 uses the file's name)."""
    found: list[PlannedEmbedding] = []
    for key, shape in shapes.items():
        entry: PlannedEmbedding | None = None
        if key.startswith(BUNDLE_PREFIX):
            token, _, name = key[len(BUNDLE_PREFIX):].partition(".")
            entry = _named(token, key, shape, name) if token else None
        elif metadata.get(key) == EMBED_MARK:
            entry = _plain(key, key, shape)
        else:
            entry = _named(stem, key, shape, key)
        if entry is not None:
            found.append(entry)
    if not found and len(shapes) == 1:  # diffusers: one tensor named after its token
        key, shape = next(iter(shapes.items()))
        block = _vectors(shape)
        if block is not None and (block[1] in WIDTH_BASES or block[1] == 1280) and "." not in key.strip("<>"):
            found.append(PlannedEmbedding(key, "text_encoder", key, *block))
    return found


def embedding_base(embeddings: list[PlannedEmbedding]) -> str | None:
    """The base the embeddings' widths name: a second encoder (clip_g) is SDXL; else CLIP-L 768 -> sd1..."""
    if any(e.encoder == "text_encoder_2" for e in embeddings):
        return "sdxl"
    widths = {e.width for e in embeddings}
    return WIDTH_BASES.get(widths.pop()) if len(widths) == 1 else None


def check_embeddings(file_name: str, embeddings: list[PlannedEmbedding], dtypes: Mapping[str, str]) -> None:
    for embedding in embeddings:
        if dtypes[embedding.key] not in ("F16", "BF16", "F32", "F64"):
            raise AdapterFileError(f"{file_name}: embedding {embedding.key[:80]!r} is {dtypes[embedding.key]}; "
                                   "vectors must be floating point")
        if math.prod((embedding.vectors, embedding.width)) > 1_000_000:
            raise AdapterFileError(f"{file_name}: embedding {embedding.key[:80]!r} holds {embedding.vectors} vectors "
                                   f"of {embedding.width}, more than an embedding holds")


def read_embeddings(path: Path, embeddings: list[PlannedEmbedding], metadata: Mapping[str, str]) -> TextualInversion:
    """Load the planned embeddings of ``path`` (its header already checked)."""
    from safetensors import SafetensorError, safe_open

    result = TextualInversion(metadata=dict(metadata))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for embedding in embeddings:
                vectors = handle.get_tensor(embedding.key).reshape(embedding.vectors, embedding.width)
                result.tokens.setdefault(embedding.token, {})[embedding.encoder] = vectors
    except (OSError, RuntimeError, ValueError, SafetensorError) as error:
        raise AdapterFileError(f"{Path(path).name}: cannot read embeddings ({str(error)[:100]})") from None
    return result
