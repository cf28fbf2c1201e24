"""Train the weight encoder: symmetric InfoNCE between adapter weights and description embeddings.

``python -m training.weight_encoder`` calls :func:`train_weight_encoder` with a corpus of hundreds
of tiny toy LoRAs and their one-line descriptions, then :func:`save_weight_encoder`.
The text side is frozen: its embeddings are computed once. Adapters that share a description
are positives of one another (soft targets), so repeated concepts are not pushed apart.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from library.lora import LoraAdapter
from retrieval.embedders.base import Embedder
from retrieval.embedders.weights import WeightEncoder, WeightEncoderConfig, pack_adapters


@dataclass
class TrainingReport:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    top1: float = 0.0  # weights -> text top-1 accuracy over the whole training set at the end

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def info_nce(
    weights: torch.Tensor, texts: torch.Tensor, groups: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch; rows with the same ``group`` are all positives."""
    logits = logit_scale.exp() * weights @ texts.T
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)
    targets = same / same.sum(dim=1, keepdim=True)
    forward = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    backward = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (forward + backward) / 2


def _drop_layers(adapter: LoraAdapter, rate: float, rng: random.Random) -> LoraAdapter:
    """Augmentation: forget a random share of the adapter's targets (at least one is kept)."""
    if rate <= 0 or len(adapter.modules) < 2:
        return adapter
    names = sorted(adapter.modules)
    kept = [name for name in names if rng.random() >= rate] or [rng.choice(names)]
    return LoraAdapter({name: adapter.modules[name] for name in kept}, adapter.metadata, adapter.source_format)


def train_weight_encoder(
    adapters: Sequence[LoraAdapter],
    texts: Sequence[str],
    text_embedder: Embedder,
    *,
    config: WeightEncoderConfig | None = None,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    temperature: float = 0.07,
    layer_dropout: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    log_every: int = 100,
    log: Callable[[str], None] | None = print,
) -> tuple[WeightEncoder, TrainingReport]:
    """Fit a :class:`WeightEncoder` so that each adapter lands next to the embedding of its text.

    ``texts[i]`` describes ``adapters[i]``. ``config`` defaults to one built from the adapters'
    targets with ``out_dim`` = the text embedder's dimension.
    """
    if len(adapters) != len(texts):
        raise ValueError(f"{len(adapters)} adapters but {len(texts)} texts")
    if len(adapters) < 2:
        raise ValueError("contrastive training needs at least two adapters")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if config is None:
        config = WeightEncoderConfig.from_adapters(adapters, out_dim=text_embedder.dimension)
    config.text_embedder = text_embedder.name
    if config.out_dim != text_embedder.dimension:
        raise ValueError(f"encoder out_dim {config.out_dim} != text embedder dimension {text_embedder.dimension}")

    unique = sorted(set(texts))
    group_of = {text: index for index, text in enumerate(unique)}
    text_vectors = torch.from_numpy(np.asarray(text_embedder.embed(unique), dtype=np.float32)).to(device)
    groups_all = torch.tensor([group_of[text] for text in texts], device=device)

    encoder = WeightEncoder(config).to(device)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / temperature), device=device))
    optimiser = torch.optim.AdamW([*encoder.parameters(), logit_scale], lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(100, steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1))),
    )

    report = TrainingReport(steps=steps, seconds=0.0)
    started = time.perf_counter()
    order: list[int] = []
    encoder.train()
    for step in range(steps):
        if len(order) < batch_size:
            extra = list(range(len(adapters)))
            rng.shuffle(extra)
            order.extend(extra)
        batch, order = order[:batch_size], order[batch_size:]
        packed = pack_adapters([_drop_layers(adapters[i], layer_dropout, rng) for i in batch], config.layers, device)
        groups = groups_all[batch]
        loss = info_nce(encoder(packed), text_vectors[groups], groups, logit_scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            logit_scale.clamp_(0, math.log(100))
        report.losses.append(float(loss.detach()))
        if log is not None and log_every and (step + 1) % log_every == 0:
            recent = report.losses[-log_every:]
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f}")

    encoder.eval()
    predicted = torch.from_numpy(encoder.encode(adapters)).to(device) @ text_vectors.T
    report.top1 = float((predicted.argmax(dim=1) == groups_all).float().mean())
    report.seconds = time.perf_counter() - started
    return encoder, report
