"""Mean-pooled BERT sentence embeddings in NumPy, for sentence-transformers folders that are just that.

``medley search`` embeds one prompt. Through sentence-transformers that costs about four seconds
of imports (torch, transformers, scikit-learn) on a 2-core machine before a 6-layer model runs
for a millisecond. A folder whose pipeline is a BERT encoder, mean pooling and (optionally)
normalisation, such as the bundled all-MiniLM-L6-v2, is small enough to run with NumPy: the
tokenizer is the folder's own ``tokenizer.json`` (the Rust ``tokenizers`` library, the same one
transformers wraps) and the weights come from ``model.safetensors``. The vectors agree with
sentence-transformers' to float32 rounding (about 1e-6; tests compare them), and
:func:`supports` says which folders qualify; every other folder goes through sentence-transformers.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ENCODER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
BATCH = 64
BATCH_TOKENS = 2048
SMALL_INPUT = 4096  # tokens: below this, one BLAS thread


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def supports(folder: Path) -> bool:
    """Whether ``folder`` is a sentence-transformers BERT + mean pooling (+ normalise) model in safetensors."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(modules, list) or not modules:
        return False
    kinds = [str(module.get("type")) for module in modules if isinstance(module, dict)]
    if kinds not in ([ENCODER, POOLING], [ENCODER, POOLING, NORMALIZE]) or modules[0].get("path") != "":
        return False
    config = _json(folder / "config.json")
    settings = _json(folder / "sentence_bert_config.json")
    pooling = _json(folder / str(modules[1].get("path", "")) / "config.json")
    modes = {key: value for key, value in pooling.items() if key.startswith("pooling_mode")}
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and modes.get("pooling_mode_mean_tokens") is True
        and not any(value for key, value in modes.items() if key != "pooling_mode_mean_tokens")
        and settings.get("do_lower_case") is not True  # sentence-transformers would lowercase before tokenizing
        and (folder / "tokenizer.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def embedding_dimension(folder: Path) -> int:
    """The vector size of a :func:`supports` folder, read from its config (no weights loaded)."""
    return int(_json(folder / "config.json")["hidden_size"])


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # scipy comes with sentence-transformers; imported here, as the model loads

    return erf(x)


@contextlib.contextmanager
def _blas_threads(tokens: int) -> Iterator[None]:
    """One BLAS thread for small inputs (a prompt): the products are too small to share, and BLAS threads
    waiting for a busy core cost a prompt ten times its compute on a loaded 2-core machine."""
    if tokens > SMALL_INPUT:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn (a sentence-transformers need)
    except ImportError:  # pragma: no cover - then BLAS keeps its own thread count
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight + bias


class NumpyBertEncoder:
    """The sentence embedding of a :func:`supports` folder: BERT's last hidden states, mean over the tokens."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        config = _json(self.folder / "config.json")
        settings = _json(self.folder / "sentence_bert_config.json")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        positions = int(config.get("max_position_embeddings", 512))
        self.max_length = min(int(settings.get("max_seq_length", positions)), positions)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        weights = load_file(str(self.folder / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self.w = {key[len(prefix):]: np.ascontiguousarray(value, dtype=np.float32)
                  for key, value in weights.items() if key.startswith(prefix) and not key.startswith(f"{prefix}pooler")}
        # y = x @ W.T + b: keep W transposed once, so each product reads memory in order
        for key in [k for k in self.w if k.endswith(".weight") and self.w[k].ndim == 2 and "embeddings" not in k]:
            self.w[key] = np.ascontiguousarray(self.w[key].T)

    @property
    def dimension(self) -> int:
        return self.hidden

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        flat = x.reshape(-1, x.shape[-1]) @ self.w[f"{name}.weight"] + self.w[f"{name}.bias"]
        return flat.reshape(*x.shape[:-1], flat.shape[-1])

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[batch, length] token ids and 0/1 mask -> [batch, hidden] mean of the last hidden states."""
        batch, length = ids.shape
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        head = self.hidden // self.heads
        blocked = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        scale = np.float32(1.0 / math.sqrt(head))
        for index in range(self.layers):
            layer = f"encoder.layer.{index}"

            def heads(name: str, x: np.ndarray = x, layer: str = layer) -> np.ndarray:
                out = self._linear(x, f"{layer}.attention.self.{name}")
                return out.reshape(batch, length, self.heads, head).transpose(0, 2, 1, 3)

            scores = (heads("query") * scale) @ heads("key").transpose(0, 1, 3, 2) + blocked
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attention = scores / scores.sum(axis=-1, keepdims=True)
            context = (attention @ heads("value")).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            x = _layer_norm(x + self._linear(context, f"{layer}.attention.output.dense"),
                            w[f"{layer}.attention.output.LayerNorm.weight"],
                            w[f"{layer}.attention.output.LayerNorm.bias"], self.eps)
            inner = self._linear(x, f"{layer}.intermediate.dense")
            inner = 0.5 * inner * (1.0 + _erf(inner * np.float32(1.0 / math.sqrt(2.0))))
            x = _layer_norm(x + self._linear(inner, f"{layer}.output.dense"),
                            w[f"{layer}.output.LayerNorm.weight"], w[f"{layer}.output.LayerNorm.bias"], self.eps)
        weights = mask[:, :, None].astype(np.float32)
        return (x * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), hidden] float32 mean-pooled embeddings (not normalised), in the order given."""
        encodings = self.tokenizer.encode_batch(list(texts))
        with _blas_threads(sum(len(encoding.ids) for encoding in encodings)):
            return self._encode_all(encodings)

    def _encode_all(self, encodings: list[Any]) -> np.ndarray:
        out = np.zeros((len(encodings), self.hidden), dtype=np.float32)
        for chosen in _batches([len(encoding.ids) for encoding in encodings]):
            length = max(len(encodings[i].ids) for i in chosen)
            ids = np.zeros((len(chosen), length), dtype=np.int64)
            mask = np.zeros((len(chosen), length), dtype=np.int64)
            for row, i in enumerate(chosen):
                tokens = encodings[i].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1
            out[chosen] = self._encode(ids, mask)
        return out


def _batches(lengths: Sequence[int]) -> Iterator[list[int]]:
    """Indices grouped by similar length, at most BATCH texts and BATCH_TOKENS padded tokens a group
    (attention is quadratic in the padded length, so one long text must not pad many short ones)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    group: list[int] = []
    for i in order:
        if group and (len(group) == BATCH or (len(group) + 1) * lengths[i] > BATCH_TOKENS):
            yield group
            group = []
        group.append(i)
    if group:
        yield group
