"""Train the toy-world judge: ``python -m training.judge [--steps N]``.

Writes ``assets/judge/`` and prints per-attribute accuracy on fresh images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from toyworld.dataset import JUDGE_VOCAB, SEEDS_JUDGE_EVAL, SEEDS_JUDGE_TRAIN, make_samples
from toyworld.judge import DEFAULT_JUDGE_DIR, Judge, accuracy, read_labels, to_tensor


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Perturb clean renders the way a diffusion sample differs from them."""
    n = images.shape[0]
    blur = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(n, 1, 1, 1, generator=generator) * 0.6
    images = images * (1 - mix) + blur * mix
    gain = 1.0 + (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.12
    noise = torch.randn(images.shape, generator=generator) * torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    return (images * gain + noise).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-images", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--out", type=Path, default=DEFAULT_JUDGE_DIR)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.time()
    seeds = range(SEEDS_JUDGE_TRAIN, SEEDS_JUDGE_TRAIN + args.train_images)
    train = make_samples(seeds, workers=args.workers, **JUDGE_VOCAB)
    labels = {k: torch.from_numpy(v) for k, v in train.label_indices().items()}
    images = to_tensor(train.images)
    print(f"rendered {len(images)} training images in {time.time() - start:.0f}s", flush=True)
    model = Judge(width=args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=args.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(images), (args.batch,), generator=generator)
        logits = model(augment(images[index], generator))
        loss = sum(F.cross_entropy(logits[k], labels[k][index]) for k in logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps:
            elapsed = time.time() - start
            print(f"step {step}/{args.steps} loss {loss.item():.4f} elapsed {elapsed:.0f}s", flush=True)
    model.eval()
    model.save(args.out)
    evaluation = make_samples(range(SEEDS_JUDGE_EVAL, SEEDS_JUDGE_EVAL + 4000), workers=args.workers, **JUDGE_VOCAB)
    scores = accuracy(read_labels(model, evaluation.images), [s.labels() for s in evaluation.scenes])
    print("held-out accuracy:", {k: round(v, 4) for k, v in scores.items()})
    print(f"min {min(scores.values()):.4f}; saved to {args.out} in {time.time() - start:.0f}s total")



if __name__ == "__main__":
    main()
