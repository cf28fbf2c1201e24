"""Reproduce the embedded toy base: ``python -m training.toy_base [--stage vae|unet|all]``.

Stage 1 trains the AutoencoderKL on toy-world images of the whole vocabulary
(novel concepts included: the autoencoder must be able to draw whatever a LoRA
will later ask of it). Stage 2 trains the UNet on base-vocabulary captions
only, so novel concepts stay unknown to the base model. Checkpoints go to
``--run-dir`` and training resumes from them; the result goes to
``assets/toy-base``. Plan about an hour on 2 CPU cores for the UNet.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.toy_base import TOY_BASE_DIR, assemble, load_toy_base, new_unet, new_vae, save_toy_base
from toyworld.dataset import JUDGE_VOCAB, SEEDS_BASE_TRAIN, SEEDS_JUDGE_EVAL, make_samples
from toyworld.judge import DEFAULT_JUDGE_DIR, Judge, accuracy, read_labels, to_tensor
from toyworld.scene import caption, sample_scene
from toyworld.vocab import BASE_SHAPES, BASE_TEXTURES

VAE_SEED_OFFSET = 5_000_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_vae(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    samples = make_samples(
        range(SEEDS_BASE_TRAIN + VAE_SEED_OFFSET, SEEDS_BASE_TRAIN + VAE_SEED_OFFSET + args.vae_images),
        workers=args.workers,
        **JUDGE_VOCAB,
    )
    images = to_tensor(samples.images) * 2 - 1
    log(f"vae: {len(images)} images rendered")
    vae = new_vae()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.vae_lr, total_steps=args.vae_steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(1, args.vae_steps + 1):
        batch = images[torch.randint(0, len(images), (args.vae_batch,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        kl = posterior.kl().mean() / batch[0].numel()
        loss = F.l1_loss(recon, batch) + F.mse_loss(recon, batch) + 1e-4 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.vae_steps:
            rate = (time.time() - start) / step
            log(f"vae step {step}/{args.vae_steps} loss {loss.item():.4f} eta {rate * (args.vae_steps - step):.0f}s")
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, 2048, 256)])
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae latent std {latents.std():.4f} -> scaling_factor {scaling:.4f}")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.run_dir / "vae")
    report_reconstruction(vae)


@torch.no_grad()
def report_reconstruction(vae: torch.nn.Module) -> dict[str, float]:
    """Judge accuracy on autoencoded images: how much the VAE loses."""
    if not (DEFAULT_JUDGE_DIR / "judge.safetensors").exists():
        log("no judge yet; skipping the reconstruction check")
        return {}
    judge = Judge.load()
    samples = make_samples(range(SEEDS_JUDGE_EVAL, SEEDS_JUDGE_EVAL + 1000), **JUDGE_VOCAB)
    x = to_tensor(samples.images) * 2 - 1
    recon = torch.cat([vae.decode(vae.encode(x[i : i + 250]).latent_dist.mean).sample for i in range(0, len(x), 250)])
    array = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    scores = accuracy(read_labels(judge, array), [s.labels() for s in samples.scenes])
    log(f"judge on VAE reconstructions: {scores}")
    return scores


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p, 1 - decay)


def base_prompts(count: int, seed0: int) -> tuple[list[str], list[dict[str, str]]]:
    scenes = [sample_scene(seed0 + i, layout=False) for i in range(count)]
    return [caption(s) for s in scenes], [s.labels() for s in scenes]


@torch.no_grad()
def evaluate(pipe, judge: Judge | None, count: int = 64, steps: int = 20, guidance: float = 3.0) -> dict[str, float]:
    if judge is None:
        return {}
    prompts, labels = base_prompts(count, SEEDS_JUDGE_EVAL + 500_000)
    generator = torch.Generator().manual_seed(0)
    images = pipe(
        prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generator, output_type="np"
    ).images
    array = (images * 255).round().astype(np.uint8)
    return accuracy(read_labels(judge, array), labels)


def train_unet(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    vae_dir = args.run_dir / "vae"
    if not vae_dir.exists():
        raise SystemExit(f"no trained VAE in {vae_dir}; run --stage vae first")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()
    cache = args.run_dir / f"latents-{args.unet_images}.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
        latents = data["latents"]
        captions = json.loads((args.run_dir / f"captions-{args.unet_images}.json").read_text())
    else:
        samples = make_samples(
            range(SEEDS_BASE_TRAIN, SEEDS_BASE_TRAIN + args.unet_images),
            workers=args.workers,
            shapes=BASE_SHAPES,
            textures=BASE_TEXTURES,
        )
        x = to_tensor(samples.images) * 2 - 1
        with torch.no_grad():
            latents = torch.cat([vae.encode(x[i : i + 500]).latent_dist.mean for i in range(0, len(x), 500)])
        latents = latents * vae.config.scaling_factor
        captions = samples.captions
        torch.save({"latents": latents}, cache)
        (args.run_dir / f"captions-{args.unet_images}.json").write_text(json.dumps(captions))
    log(f"unet: {len(latents)} latents, std {latents.std():.3f}")

    unet = new_unet()
    pipe = assemble(vae, unet)
    scheduler = pipe.scheduler
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-2)
    ema = EMA(unet, args.ema)
    step = 0
    checkpoint = args.run_dir / "unet-checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        unet.load_state_dict(state["unet"])
        ema.model.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        log(f"resumed from step {step}")
    judge = Judge.load() if (DEFAULT_JUDGE_DIR / "judge.safetensors").exists() else None
    generator = torch.Generator().manual_seed(1234 + step)
    empty = pipe.encode_prompt([""], "cpu", 1, False)[0]
    start, start_step = time.time(), step
    while step < args.steps:
        step += 1
        lr = args.lr * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, len(latents), (args.batch,), generator=generator)
        x0 = latents[index]
        with torch.no_grad():
            cond = pipe.encode_prompt([captions[i] for i in index.tolist()], "cpu", 1, False)[0]
        drop = torch.rand(args.batch, generator=generator) < 0.1
        cond[drop] = empty
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=generator)
        noisy = scheduler.add_noise(x0, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema.update(unet)
        if step % 50 == 0:
            rate = (time.time() - start) / (step - start_step)
            eta = rate * (args.steps - step) / 60
            log(f"unet step {step}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} {rate:.2f}s/step eta {eta:.1f}min")
        if step % args.checkpoint_every == 0 or step == args.steps:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save(
                {"unet": unet.state_dict(), "ema": ema.model.state_dict(), "ema_updates": ema.updates,
                 "optimizer": optimizer.state_dict(), "step": step},
                tmp,
            )
            tmp.replace(checkpoint)
            eval_pipe = assemble(vae, ema.model)
            save_toy_base(eval_pipe, args.out)
            scores = evaluate(eval_pipe, judge)
            log(f"checkpoint at step {step} saved to {args.out}; judge on base prompts: {scores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("vae", "unet", "all", "eval"), default="all")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/toy-base"))
    parser.add_argument("--out", type=Path, default=TOY_BASE_DIR)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--vae-images", type=int, default=20_000)
    parser.add_argument("--vae-steps", type=int, default=3500)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--unet-images", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.stage in ("vae", "all"):
        train_vae(args)
    if args.stage in ("unet", "all"):
        train_unet(args)
    if args.stage == "eval":
        judge = Judge.load()
        log(f"judge on base prompts: {evaluate(load_toy_base(args.out), judge, count=256)}")


if __name__ == "__main__":
    main()
