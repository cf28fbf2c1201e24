"""Train the fusion gate: ``python -m training.fusion_gate [--steps N] [--batch B] [--lr X] [--out DIR]``.

AutoLoRA ("AutoLoRA: Automatic LoRA Retrieval and Fine-Grained Gated Fusion for Text-to-Image
Generation") fuses several LoRAs with a learnt gate that weighs each one's output per layer and
per diffusion timestep (Medley's form, per output channel too: :mod:`fusion.gate`). Medley trains
that gate with the ordinary denoising loss on images of the composed concepts; the toy world
renders such images exactly, so the gate of the embedded base learns from ground truth:

1. the starter adapters are read from ``--library`` (content = the novel shapes; style = the novel
   textures and colour palettes; the kind from ``medley.kind`` in each file's metadata);
2. training pairs are every (content, style) with neither concept in
   :data:`toyworld.concepts.COMPOSITION_HELDOUT` (those pairs are the composition benchmark's
   held-out set, never seen here);
3. per pair, ``--scenes`` scenes of :func:`toyworld.concepts.combined_scenes` are rendered once,
   encoded once to VAE latents (posterior mean x scaling factor) and their captions (which hold
   both trigger words) embedded once, the way :mod:`training.lora_trainer` does;
4. each step takes one pair (pairs cycled in a seeded, reshuffled order), a batch of its latents,
   fresh noise and uniform timesteps, and minimises :func:`fusion.gate_training.gate_loss` with
   AdamW over the gate's parameters only (UNet, VAE, text encoder and adapters stay frozen);
5. a fixed validation set (unseen seeds of some training pairs, fixed noise and timesteps) is
   scored before training, where the gate equals the weighted merge, and after it;
6. the gate is written to ``--out`` (``gate.safetensors`` + ``config.json``, each renamed into
   place), with a training record in ``config.json["training"]``.

The gate covers every attention projection and convolution (``fusion.gate.ALL_TARGETS``) that
some training adapter adapts (``--targets attention``: the attention projections only); other
layers keep the plain sum. It starts merge-equivalent, and no weight decay pulls it elsewhere.

Cost (toy base, 2-core CPU, otherwise idle, batch 16): about 0.5 s per step, about twice a merged
composition's UNet forward+backward (the gate needs each adapter's output at every covered layer;
``--targets attention`` is about a quarter cheaper). The default 1500 steps take about 13 minutes,
plus well under a minute to render and encode the scenes (36 to 54 pairs x 48 scenes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusion.gate import ALL_TARGETS, DEFAULT_TARGETS, GATE_DIR, FusionGate
from fusion.gate_training import gate_loss
from fusion.spec import AdapterSpec
from library.lora import LoraAdapter
from toyworld.concepts import COMPOSITION_HELDOUT, combined_scenes
from toyworld.dataset import SEEDS_LORA, render_scenes
from toyworld.scene import caption
from toyworld.vocab import NOVEL_CONCEPTS, NovelConcept

STARTER_DIR = Path(__file__).resolve().parent.parent / "assets" / "starter-library"
# scene seeds of the gate's compositions: a range no other training run or benchmark uses
SEEDS_GATE = SEEDS_LORA + 6_000_000
SEEDS_PER_PAIR = 1_000  # per pair: training seeds from 0, validation seeds from VALIDATION_OFFSET
VALIDATION_OFFSET = 500
# --targets: which layers the gate may cover (of those the training adapters adapt)
TARGET_SETS: dict[str, tuple[str, ...]] = {"all": ALL_TARGETS, "attention": DEFAULT_TARGETS}


# ---------------------------------------------------------------- adapters and pairs
@dataclass(frozen=True)
class StarterAdapter:
    """One adapter of the library with the toy-world concept it draws and its kind."""

    concept: NovelConcept
    kind: str  # "content" or "style" (palettes are style)
    adapter: LoraAdapter

    @property
    def name(self) -> str:
        return self.concept.name

    def spec(self) -> AdapterSpec:
        return AdapterSpec(self.name, self.adapter, role=self.kind)


Pair = tuple[StarterAdapter, StarterAdapter]


def kind_of(concept: NovelConcept, metadata: dict[str, str]) -> str:
    """The adapter's kind: ``medley.kind`` from its metadata, else the concept's (palette -> style)."""
    kind = metadata.get("medley.kind") or ("content" if concept.kind == "content" else "style")
    if kind not in ("content", "style"):
        raise ValueError(f"{concept.name}: kind {kind!r} is neither content nor style")
    return kind


def load_starters(directory: Path) -> list[StarterAdapter]:
    """Every ``<concept>.safetensors`` in ``directory`` named after a novel concept, in vocabulary order."""
    from library.formats.reader import read_adapter

    starters = []
    for concept in NOVEL_CONCEPTS:
        path = Path(directory) / f"{concept.name}.safetensors"
        if path.is_file():
            adapter = read_adapter(path)
            starters.append(StarterAdapter(concept, kind_of(concept, adapter.metadata), adapter))
    if not starters:
        raise SystemExit(f"no starter adapters in {directory}; "
                         "reproduce them with `python -m training.starter_library`")
    return starters


def training_pairs(starters: Sequence[StarterAdapter], heldout: Collection[str] = COMPOSITION_HELDOUT) -> list[Pair]:
    """Every (content, style) pair whose concepts are both outside ``heldout``."""
    kept = [s for s in starters if s.name not in heldout]
    contents = [s for s in kept if s.kind == "content"]
    styles = [s for s in kept if s.kind == "style"]
    return [(c, s) for c in contents for s in styles]


def pair_name(pair: Pair) -> str:
    return f"{pair[0].name}+{pair[1].name}"


def pair_seed0(pair: Pair) -> int:
    """The first scene seed of ``pair``, fixed by its two concepts alone."""
    key = NOVEL_CONCEPTS.index(pair[0].concept) * len(NOVEL_CONCEPTS) + NOVEL_CONCEPTS.index(pair[1].concept)
    return SEEDS_GATE + key * SEEDS_PER_PAIR


def covered_layers(pairs: Iterable[Pair]) -> set[str]:
    """The UNet targets some adapter of ``pairs`` adapts (the layers the gate can learn)."""
    return {t for pair in pairs for s in pair for t in s.adapter.modules if t.startswith("unet.")}


# ---------------------------------------------------------------- precomputed data
@dataclass
class PairData:
    """The ground truth of one pair: scaled VAE latents and caption embeddings, one per scene."""

    pair: Pair
    latents: torch.Tensor  # [N, C, h, w]
    embeds: torch.Tensor  # [N, tokens, dim]

    @property
    def name(self) -> str:
        return pair_name(self.pair)


def pair_data(pipe: Any, pair: Pair, seeds: Sequence[int]) -> PairData:
    """Render, caption, encode and embed the composed scenes of ``pair`` at ``seeds``."""
    from training.lora_trainer import PromptCache, encode_images

    scenes = combined_scenes([pair[0].concept, pair[1].concept], seeds)
    latents = encode_images(pipe, render_scenes(scenes)).cpu()
    embeds = PromptCache(pipe)([caption(s) for s in scenes]).float().cpu()
    return PairData(pair, latents, embeds)


def build_data(
    pipe: Any, pairs: Sequence[Pair], scenes: int, offset: int = 0, log: Callable[[str], None] | None = None
) -> list[PairData]:
    """:func:`pair_data` of every pair, ``scenes`` seeds from ``pair_seed0 + offset``."""
    if not 0 < scenes <= VALIDATION_OFFSET:
        raise ValueError(f"scenes per pair must lie in 1..{VALIDATION_OFFSET}, got {scenes}")
    data = []
    for index, pair in enumerate(pairs):
        start = pair_seed0(pair) + offset
        data.append(pair_data(pipe, pair, range(start, start + scenes)))
        if log is not None and ((index + 1) % 10 == 0 or index + 1 == len(pairs)):
            log(f"encoded {index + 1}/{len(pairs)} pairs ({(index + 1) * scenes} scenes)")
    return data


# ---------------------------------------------------------------- training
@dataclass
class GateTrainingConfig:
    steps: int = 1500
    batch: int = 16
    lr: float = 3e-3
    seed: int = 0
    scenes: int = 48  # per training pair
    warmup: int = 20
    time_features: int = 16
    targets: tuple[str, ...] = ALL_TARGETS
    log_every: int = 10
    validation_pairs: int = 8
    validation_scenes: int = 16

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        return out


@dataclass
class Batch:
    data: PairData
    latents: torch.Tensor
    embeds: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor


def learning_rate(config: GateTrainingConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak (as the LoRA trainer)."""
    lr = config.lr * min(1.0, step / max(1, config.warmup))
    return lr * (0.5 * (1 + math.cos(math.pi * step / max(1, config.steps))) * 0.9 + 0.1)


def pair_order(count: int, seed: int, epoch: int) -> list[int]:
    """The pairs' order in one pass over them (a seeded shuffle per pass)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 7 * epoch + 1)
    return torch.randperm(count, generator=generator).tolist()


def make_batch(data: Sequence[PairData], config: GateTrainingConfig, step: int, train_timesteps: int) -> Batch:
    """Step ``step``'s batch (1-based): one pair, cycled; its scenes, noise and timesteps from one seeded generator."""
    epoch, position = divmod(step - 1, len(data))
    chosen = data[pair_order(len(data), config.seed, epoch)[position]]
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    count = len(chosen.latents)
    index = torch.randperm(count, generator=generator)[: min(config.batch, count)]
    latents = chosen.latents[index]
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, train_timesteps, (len(index),), generator=generator)
    return Batch(chosen, latents, chosen.embeds[index], noise, timesteps)


def batch_loss(pipe: Any, gate: FusionGate, batch: Batch) -> torch.Tensor:
    """:func:`gate_loss` of ``batch`` on the UNet's device."""
    device = pipe.unet.device
    content, style = batch.data.pair
    return gate_loss(
        pipe,
        gate,
        content.spec(),
        style.spec(),
        batch.latents.to(device),
        batch.noise.to(device),
        batch.timesteps.to(device),
        batch.embeds.to(device, pipe.unet.dtype),
    )


def validation_batches(data: Sequence[PairData], train_timesteps: int) -> list[Batch]:
    """Fixed noise and evenly spread timesteps for each validation pair (the same before and after)."""
    batches = []
    for index, item in enumerate(data):
        generator = torch.Generator().manual_seed(9_000_000 + index)
        count = len(item.latents)
        timesteps = torch.linspace(0, train_timesteps - 1, count).round().long()
        noise = torch.randn(item.latents.shape, generator=generator)
        batches.append(Batch(item, item.latents, item.embeds, noise, timesteps))
    return batches


@torch.no_grad()
def validation_loss(pipe: Any, gate: FusionGate, batches: Sequence[Batch]) -> float:
    """Mean :func:`gate_loss` over ``batches`` (nan when there are none)."""
    if not batches:
        return float("nan")
    return float(sum(float(batch_loss(pipe, gate, b)) for b in batches) / len(batches))


@dataclass
class TrainingResult:
    gate: FusionGate
    losses: list[float] = field(default_factory=list)
    validation_before: float = float("nan")
    validation_after: float = float("nan")
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 10% of steps (one step's loss is noisy: random timesteps)."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return float(sum(tail) / len(tail)) if tail else float("nan")


def new_gate(pipe: Any, pairs: Sequence[Pair], config: GateTrainingConfig) -> FusionGate:
    """A merge-equivalent gate over the layers the training adapters adapt."""
    gate = FusionGate.for_unet(pipe.unet, config.targets, config.time_features, only=covered_layers(pairs))
    if not gate.features:
        raise ValueError("the training adapters adapt no layer the gate can cover")
    return gate.to(pipe.unet.device)


def train_gate(
    pipe: Any,
    data: Sequence[PairData],
    config: GateTrainingConfig,
    validation: Sequence[PairData] = (),
    log: Callable[[str], None] = print,
) -> TrainingResult:
    """Train a fresh gate on ``data`` (one pair per step); only the gate's parameters learn."""
    torch.manual_seed(config.seed)
    pipe.unet.requires_grad_(False)
    pipe.unet.eval()
    gate = new_gate(pipe, [d.pair for d in data], config)
    train_timesteps = int(pipe.scheduler.config.num_train_timesteps)
    checks = validation_batches(validation, train_timesteps)
    result = TrainingResult(gate, validation_before=validation_loss(pipe, gate, checks))
    if checks:
        log(f"validation loss at the start (the weighted merge): {result.validation_before:.5f}")
    # no weight decay: it would pull w_out from its merge-equivalent 2 toward 0
    optimiser = torch.optim.AdamW(gate.parameters(), lr=config.lr, weight_decay=0.0)
    started = time.perf_counter()
    for step in range(1, config.steps + 1):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(config, step)
        batch = make_batch(data, config, step, train_timesteps)
        loss = batch_loss(pipe, gate, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: the loss is {float(loss)} on {batch.data.name}")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(gate.parameters()), 1.0)
        optimiser.step()
        result.losses.append(round(float(loss.detach()), 6))
        if step % config.log_every == 0 or step == config.steps:
            log(progress_line(result.losses, step, config.steps, time.perf_counter() - started, config.log_every))
    result.seconds = time.perf_counter() - started
    result.validation_after = validation_loss(pipe, gate, checks)
    if checks:
        log(f"validation loss at the end: {result.validation_after:.5f} (start {result.validation_before:.5f})")
    return result


def progress_line(losses: Sequence[float], step: int, total: int, elapsed: float, window: int) -> str:
    recent = losses[-window:]
    rate = elapsed / max(1, step)
    return (f"step {step}/{total}  loss {losses[-1]:.4f}  (mean of last {len(recent)}: "
            f"{sum(recent) / len(recent):.4f})  {rate:.2f} s/step  eta {rate * (total - step):.0f}s")


# ---------------------------------------------------------------- saving
def training_record(
    config: GateTrainingConfig, pairs: Sequence[Pair], validation: Sequence[PairData], result: TrainingResult
) -> dict[str, Any]:
    return {
        "script": "training/fusion_gate.py",
        "method": "AutoLoRA-style fine-grained gated fusion, denoising loss on composed toy-world renders",
        "steps": config.steps,
        "config": config.to_dict(),
        "pairs": [pair_name(p) for p in pairs],
        "heldout_concepts": sorted(COMPOSITION_HELDOUT),
        "validation_pairs": [d.name for d in validation],
        "latents": len(pairs) * config.scenes,
        "final_loss": round(result.final_loss, 6),
        "validation_loss_merge": round(result.validation_before, 6),
        "validation_loss_trained": round(result.validation_after, 6),
        "seconds": round(result.seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def save_gate(gate: FusionGate, record: dict[str, Any], out: Path) -> Path:
    """Write the gate and its training record (``config.json["training"]``) atomically to ``out``."""
    gate.record = record
    return gate.save(out)


# ---------------------------------------------------------------- command line
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def validation_pairs(pairs: Sequence[Pair], count: int) -> list[Pair]:
    """``count`` training pairs evenly spaced over the (content-major) list, so they span contents
    and styles; their validation scenes use seeds no training scene uses."""
    if count <= 0 or not pairs:
        return []
    if count >= len(pairs):
        return list(pairs)
    return [pairs[round(i * (len(pairs) - 1) / max(1, count - 1))] for i in range(count)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = GateTrainingConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--scenes", type=int, default=defaults.scenes, help="rendered scenes per training pair")
    parser.add_argument("--targets", choices=sorted(TARGET_SETS), default="all",
                        help="all: attention projections and convolutions (proj_in/out, resnet conv1/conv2); "
                             "attention: to_q/to_k/to_v/to_out.0 only (cheaper per step, AutoLoRA's choice)")
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--validation-pairs", type=int, default=defaults.validation_pairs)
    parser.add_argument("--library", type=Path, default=STARTER_DIR, help="folder of the starter adapters")
    parser.add_argument("--out", type=Path, default=GATE_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = GateTrainingConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, scenes=args.scenes,
                                targets=TARGET_SETS[args.targets], log_every=max(1, args.log_every),
                                validation_pairs=args.validation_pairs)
    from pipeline import load_base

    base = load_base(None, device="cpu")
    pipe = base.pipe
    starters = load_starters(args.library)
    pairs = training_pairs(starters)
    if not pairs:
        raise SystemExit("no (content, style) pair outside the held-out concepts")
    checked = validation_pairs(pairs, config.validation_pairs)
    log(f"{len(pairs)} training pairs ({len(pairs) * config.scenes} latents); held out: "
        f"{', '.join(sorted(COMPOSITION_HELDOUT))}")
    data = build_data(pipe, pairs, config.scenes, log=log)
    validation = build_data(pipe, checked, config.validation_scenes, offset=VALIDATION_OFFSET)
    result = train_gate(pipe, data, config, validation, log=log)
    path = save_gate(result.gate, training_record(config, pairs, validation, result), args.out)
    log(f"gate over {len(result.gate.features)} layers -> {path} (final loss {result.final_loss:.5f}, "
        f"{result.seconds:.0f}s of training)")
    print(json.dumps({"out": str(path), "final_loss": result.final_loss,
                      "validation_merge": result.validation_before, "validation_trained": result.validation_after}))


if __name__ == "__main__":
    sys.exit(main())
