"""An AutoLoRA-style weight encoder: an adapter's low-rank weights -> a vector in the text space.

Per targeted layer, learnable probes ``q`` read the update through its product,
``(alpha / r) * B (A q)``, so the token does not depend on how the update is factorised
(``B M, M^-1 A`` gives the same token) nor on the rank. Each response is normalised
(its log-magnitude kept as a feature), projected to ``d_model``, given a layer-position
embedding, and the tokens of the layers the adapter targets go through a small
transformer; the mean of the tokens, projected to ``out_dim`` (the text embedder's
dimension, 384 for MiniLM) and L2-normalised, is the adapter's vector. It is trained with
a symmetric InfoNCE loss against text embeddings of adapter descriptions
(:mod:`retrieval.weight_encoder_training`).

Saved as ``model.safetensors`` + ``config.json`` in a folder (default ``assets/weight-encoder/``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from library.files import write_atomic
from library.lora import LoraAdapter, LoraModule
from retrieval.embedders.novelty import Novelty
from retrieval.embedders.text import EmbedderUnavailableError
from retrieval.paths import WEIGHT_ENCODER_DIR

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class LayerSpec:
    """One target the encoder knows: its canonical name and the flattened shape of its update."""

    name: str
    in_features: int  # conv: in_channels * kh * kw
    out_features: int


def _flat_shape(module: LoraModule) -> tuple[int, int]:
    return int(module.down[0].numel()), int(module.up.shape[0])


@dataclass
class WeightEncoderConfig:
    layers: list[LayerSpec]
    d_model: int = 128
    n_heads: int = 4
    n_blocks: int = 2
    n_probes: int = 1
    out_dim: int = 384
    dropout: float = 0.0
    text_embedder: str = ""  # the name of the text embedder whose space the output lives in
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_adapters(cls, adapters: Sequence[LoraAdapter], **kwargs: Any) -> WeightEncoderConfig:
        """The layer vocabulary is the union of the adapters' targets (sorted), with their shapes."""
        shapes: dict[str, tuple[int, int]] = {}
        for adapter in adapters:
            for name, module in adapter.modules.items():
                shape = _flat_shape(module)
                if shapes.setdefault(name, shape) != shape:
                    raise ValueError(f"target {name} has shape {shapes[name]} in one adapter and {shape} in another")
        layers = [LayerSpec(name, *shapes[name]) for name in sorted(shapes)]
        return cls(layers=layers, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [[spec.name, spec.in_features, spec.out_features] for spec in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightEncoderConfig:
        data = dict(data)
        data["layers"] = [LayerSpec(str(n), int(i), int(o)) for n, i, o in data["layers"]]
        return cls(**data)


@dataclass
class PackedLoras:
    """A batch of adapters laid out per layer; ranks zero-padded (exact: padded ranks add nothing).

    ``downs[l]`` [N, r_max, in], ``ups[l]`` [N, out, r_max] with the scale alpha/r folded in,
    ``present`` [N, L] bool; ``ignored[i]`` lists adapter i's targets that the encoder does not know.
    """

    downs: list[torch.Tensor]
    ups: list[torch.Tensor]
    present: torch.Tensor
    ignored: list[list[str]]

    def __len__(self) -> int:
        return int(self.present.shape[0])


def pack_adapters(
    adapters: Sequence[LoraAdapter], layers: Sequence[LayerSpec], device: str | torch.device = "cpu"
) -> PackedLoras:
    known = {spec.name for spec in layers}
    downs: list[torch.Tensor] = []
    ups: list[torch.Tensor] = []
    present = torch.zeros(len(adapters), len(layers), dtype=torch.bool)
    for index, spec in enumerate(layers):
        modules = [adapter.modules.get(spec.name) for adapter in adapters]
        r_max = max((m.rank for m in modules if m is not None), default=1)
        down = torch.zeros(len(adapters), r_max, spec.in_features)
        up = torch.zeros(len(adapters), spec.out_features, r_max)
        for row, module in enumerate(modules):
            if module is None:
                continue
            if _flat_shape(module) != (spec.in_features, spec.out_features):
                raise ValueError(
                    f"target {spec.name}: adapter has in={_flat_shape(module)[0]} out={_flat_shape(module)[1]}, "
                    f"the encoder expects in={spec.in_features} out={spec.out_features}"
                )
            rank = module.rank
            down[row, :rank] = module.down.reshape(rank, -1).float()
            up[row, :, :rank] = module.up.reshape(spec.out_features, rank).float() * module.scale
            present[row, index] = True
        downs.append(down.to(device))
        ups.append(up.to(device))
    ignored = [sorted(set(adapter.modules) - known) for adapter in adapters]
    return PackedLoras(downs, ups, present.to(device), ignored)


class WeightEncoder(nn.Module):
    def __init__(self, config: WeightEncoderConfig) -> None:
        super().__init__()
        self.config = config
        n_layers = len(config.layers)
        if n_layers == 0:
            raise ValueError("a weight encoder needs at least one layer")
        self.probes = nn.ParameterList(
            [nn.Parameter(torch.randn(config.n_probes, spec.in_features) / math.sqrt(spec.in_features))
             for spec in config.layers]
        )
        widths = sorted({spec.out_features for spec in config.layers})
        self.projections = nn.ModuleDict({str(width): nn.Linear(width, config.d_model) for width in widths})
        self.magnitude = nn.Linear(1, config.d_model)
        self.positions = nn.Parameter(torch.randn(n_layers * config.n_probes, config.d_model) * 0.02)
        self.global_token = nn.Parameter(torch.randn(1, 1, config.d_model) * 0.02)
        block = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            dim_feedforward=4 * config.d_model,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(block, config.n_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.out_dim)

    def tokens(self, packed: PackedLoras) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, 1 + L*P, d_model] tokens, [N, 1 + L*P] mask of the tokens that exist)."""
        parts = []
        for index, spec in enumerate(self.config.layers):
            probe = self.probes[index]  # [P, in]
            response = torch.bmm(packed.ups[index], torch.einsum("nri,pi->nrp", packed.downs[index], probe))
            response = response.transpose(1, 2)  # [N, P, out]
            magnitude = torch.log(response.norm(dim=-1, keepdim=True) + 1e-8)
            shape_only = F.layer_norm(response, (spec.out_features,))
            parts.append(self.projections[str(spec.out_features)](shape_only) + self.magnitude(magnitude))
        tokens = torch.cat(parts, dim=1) + self.positions  # [N, L*P, d]
        batch = tokens.shape[0]
        tokens = torch.cat([self.global_token.expand(batch, -1, -1), tokens], dim=1)
        exists = packed.present.repeat_interleave(self.config.n_probes, dim=1)
        exists = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=exists.device), exists], dim=1)
        return tokens, exists

    def forward(self, packed: PackedLoras) -> torch.Tensor:
        """[N, out_dim], L2-normalised."""
        tokens, exists = self.tokens(packed)
        hidden = self.transformer(tokens, src_key_padding_mask=~exists)
        weights = exists.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return F.normalize(self.head(self.norm(pooled)), dim=-1)

    def encode(self, adapters: Sequence[LoraAdapter], batch_size: int = 16) -> np.ndarray:
        """Adapters -> [N, out_dim] float32 unit vectors (eval mode, no gradients)."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(adapters), batch_size):
                packed = pack_adapters(adapters[start : start + batch_size], self.config.layers, device)
                chunks.append(self(packed).float().cpu().numpy())
        self.train(was_training)
        if not chunks:
            return np.zeros((0, self.config.out_dim), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def save_weight_encoder(encoder: WeightEncoder, folder: str | Path | None = None) -> Path:
    """Write ``model.safetensors`` then ``config.json`` (each atomically) into ``folder``."""
    from safetensors.torch import save

    target = WEIGHT_ENCODER_DIR if folder is None else Path(folder)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in encoder.state_dict().items()}
    write_atomic(target / WEIGHTS_FILE, save(state, metadata={"format": "pt", "medley": "weight-encoder"}))
    write_atomic(target / CONFIG_FILE, json.dumps(encoder.config.to_dict(), indent=1).encode())
    return target


def load_weight_encoder(folder: str | Path | None = None, device: str = "cpu") -> WeightEncoder:
    """Read a saved encoder; a missing folder raises :class:`EmbedderUnavailableError` saying how to make one."""
    from safetensors.torch import load_file

    source = WEIGHT_ENCODER_DIR if folder is None else Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (source / name).is_file()]
    if missing:
        raise EmbedderUnavailableError(
            f"no weight encoder in {source}: missing {', '.join(missing)} "
            "(train one with `python -m training.weight_encoder`, which runs "
            "retrieval.weight_encoder_training.train_weight_encoder)"
        )
    config = WeightEncoderConfig.from_dict(json.loads((source / CONFIG_FILE).read_text()))
    encoder = WeightEncoder(config)
    encoder.load_state_dict(load_file(str(source / WEIGHTS_FILE)), strict=True)
    return encoder.to(device).eval()


class WeightEmbedder:
    """Adapters -> vectors in the space of the text embedder the encoder was trained against.

    ``novelty`` (default: the folder's ``known.safetensors``, when an encoder is loaded from a
    folder) is the correction :meth:`index_vectors` / :meth:`query_vectors` apply for search.
    """

    def __init__(self, encoder: WeightEncoder | None = None, *, folder: str | Path | None = None,
                 novelty: Novelty | None = None) -> None:
        self.encoder = encoder if encoder is not None else load_weight_encoder(folder)
        if novelty is None and encoder is None:
            novelty = Novelty.load(WEIGHT_ENCODER_DIR if folder is None else Path(folder))
        self.novelty = novelty
        digest = hashlib.sha256(json.dumps(self.encoder.config.to_dict(), sort_keys=True).encode())
        for tensor in self.encoder.state_dict().values():
            digest.update(tensor.detach().cpu().float().numpy().tobytes()[:4096])
        if novelty is not None:  # every part of the correction changes the vectors an index holds
            digest.update(f"novelty {novelty.k} {novelty.beta!r} {novelty.reference!r}".encode())
            digest.update(np.ascontiguousarray(novelty.known, dtype=np.float32).tobytes())
        self._name = f"weights:{digest.hexdigest()[:8]}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self.encoder.config.out_dim

    @property
    def text_space(self) -> str:
        """The name of the text embedder whose space these vectors live in."""
        return self.encoder.config.text_embedder

    def embed_adapters(self, adapters: Sequence[LoraAdapter]) -> np.ndarray:
        return self.encoder.encode(adapters)

    @property
    def search_dimension(self) -> int:
        """The width of :meth:`index_vectors` and :meth:`query_vectors`."""
        return self.dimension + (1 if self.novelty is not None else 0)

    def index_vectors(self, adapters: Sequence[LoraAdapter]) -> np.ndarray:
        """What a weights-only index holds: the adapters' vectors, novelty-corrected when the encoder has it."""
        vectors = self.embed_adapters(adapters)
        return vectors if self.novelty is None else self.novelty.index_vectors(vectors)

    def query_vectors(self, text_vectors: np.ndarray) -> np.ndarray:
        """Text-space query vectors for a weights-only index built by :meth:`index_vectors`."""
        return text_vectors if self.novelty is None else self.novelty.query_vectors(text_vectors)
