"""Train one LoRA on a diffusers Stable-Diffusion pipeline with PEFT LoRA layers.

The loop behind the starter library and ``medley train``: latents are encoded
once, captions embedded once, then the UNet's attention projections get a PEFT
LoRA and only its parameters learn. Options:

- prior preservation: a second set of (latents, captions) without the trigger
  mixed into every batch (DreamBooth, Ruiz et al. 2023), weighted by ``prior_weight``;
- CAT (Contrastive Adapter Training): on the class captions, the adapted
  prediction is pulled toward the frozen base's prediction on the same noisy
  latent, ``lambda_cat * MSE(eps_adapted(x_t, c_class), eps_base(x_t, c_class))``;
- checkpoints every N steps (LoRA and optimizer state in safetensors with the step
  record in its header, written to a temporary file and renamed, so a kill -9
  leaves the last complete one, weights and step together) and
  resume from them with identical batches (one generator per step), so a resumed
  run ends with the same adapter as an uninterrupted one.

The adapter itself is a pluggable :class:`AdapterBackend`: PEFT LoRA layers by
default (:class:`PeftBackend`), or Break-for-Make's partly learnable projections
(:class:`training.b4m.B4MBackend`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save

from fusion.gate_training import denoising_target
from library.files import write_atomic
from library.lora import LoraAdapter, LoraModule

ADAPTER_NAME = "medley_training"
CHECKPOINT_KEY = "medley.checkpoint"  # the step record inside checkpoint.safetensors
ATTENTION_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class LoraTrainingConfig:
    rank: int = 8
    alpha: float | None = None  # None: alpha = rank (scale 1)
    learning_rate: float = 1e-3
    steps: int = 600
    batch_size: int = 16
    targets: tuple[str, ...] = ATTENTION_TARGETS
    seed: int = 0
    prior_weight: float = 1.0
    prior_fraction: float = 0.25  # share of each batch drawn from the prior set
    lambda_cat: float = 0.0  # 0 disables CAT
    snr_gamma: float = 5.0  # min-SNR loss weighting (Hang et al. 2023)
    warmup_steps: int = 20
    checkpoint_every: int = 0  # 0: no checkpoints

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["alpha"] = self.lora_alpha
        return out


@dataclass
class TrainingData:
    """Images as [N, H, W, 3] uint8 plus one caption each; optional prior and CAT class captions."""

    images: np.ndarray
    captions: list[str]
    prior_images: np.ndarray | None = None
    prior_captions: list[str] = field(default_factory=list)
    class_captions: list[str] = field(default_factory=list)  # CAT: instance captions with the trigger removed

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise ValueError(f"{len(self.images)} images but {len(self.captions)} captions")
        if len(self.images) == 0:
            raise ValueError("no training images")
        if self.prior_images is not None and len(self.prior_images) != len(self.prior_captions):
            raise ValueError("prior images and prior captions differ in number")
        if self.class_captions and len(self.class_captions) != len(self.captions):
            raise ValueError("CAT needs one class caption per instance caption")


@dataclass
class TrainingProgress:
    step: int
    total: int
    loss: float
    seconds_per_step: float

    @property
    def eta_seconds(self) -> float:
        return self.seconds_per_step * (self.total - self.step)


ProgressCallback = Callable[[TrainingProgress], None]
StepHook = Callable[[int], None]


@torch.no_grad()
def encode_images(pipe: StableDiffusionPipeline, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> scaled VAE latents (the posterior means)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    vae = pipe.vae
    x = x.to(vae.device, vae.dtype)
    latents = torch.cat([vae.encode(x[i : i + batch]).latent_dist.mean for i in range(0, len(x), batch)])
    return (latents * vae.config.scaling_factor).float()


class PromptCache:
    """Embeds each distinct caption once."""

    def __init__(self, pipe: StableDiffusionPipeline) -> None:
        self.pipe = pipe
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self.cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            embeds = self.pipe.encode_prompt(chunk, self.pipe.device, 1, False)[0]
            self.cache.update(zip(chunk, embeds, strict=True))
        return torch.stack([self.cache[c] for c in captions])


def lora_state_to_adapter(state: dict[str, torch.Tensor], alpha: float, metadata: dict[str, str]) -> LoraAdapter:
    """A PEFT UNet state dict (``<module>.lora_A.weight`` / ``lora_B``) -> canonical form."""
    modules: dict[str, LoraModule] = {}
    for key, tensor in state.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        up = state[key.replace(".lora_A.", ".lora_B.")]
        modules[f"unet.{module}"] = LoraModule(down=tensor.detach().float().cpu().clone(),
                                               up=up.detach().float().cpu().clone(), alpha=alpha)
    return LoraAdapter(modules=modules, metadata=dict(metadata), source_format="medley")


class AdapterBackend(Protocol):
    """What the training loop needs from the adapter being trained."""

    def attach(self, unet: torch.nn.Module, seed: int) -> None:
        """Add the (freshly initialised) adapter layers to ``unet``."""

    def parameter_groups(self) -> list[tuple[dict[str, torch.nn.Parameter], float]]:
        """Named trainable parameters, each group with its learning-rate multiplier."""

    def frozen_state(self) -> dict[str, torch.Tensor]:
        """Fixed tensors that are part of the adapter (saved in checkpoints); may be empty."""

    def load_frozen_state(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def disabled(self) -> contextlib.AbstractContextManager[None]:
        """A context in which the UNet runs without the adapter (the frozen base, for CAT)."""

    def to_adapter(self) -> LoraAdapter:
        """The trained adapter in canonical form (tensors copied to the CPU)."""

    def detach(self) -> None:
        """Remove every layer and hook from the UNet."""


class PeftBackend:
    """PEFT LoRA layers on the modules whose names end with one of ``targets``."""

    def __init__(self, rank: int, alpha: float, targets: Sequence[str]) -> None:
        self.rank, self.alpha, self.targets = rank, alpha, list(targets)
        self.unet: torch.nn.Module | None = None

    def attach(self, unet: torch.nn.Module, seed: int) -> None:
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.targets,
                            init_lora_weights="gaussian")
        torch.manual_seed(seed)  # the LoRA init
        unet.add_adapter(config, adapter_name=ADAPTER_NAME)  # type: ignore[operator]
        self.unet = unet

    def parameter_groups(self) -> list[tuple[dict[str, torch.nn.Parameter], float]]:
        assert self.unet is not None
        params = {n: p for n, p in self.unet.named_parameters() if ADAPTER_NAME in n}
        for p in params.values():
            if p.dtype != torch.float32:  # train LoRA weights in float32 on a half-precision base
                p.data = p.data.float()
        return [(params, 1.0)]

    def frozen_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_frozen_state(self, tensors: dict[str, torch.Tensor]) -> None:
        return None

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        assert self.unet is not None
        self.unet.disable_adapters()  # type: ignore[operator]
        try:
            yield
        finally:
            self.unet.enable_adapters()  # type: ignore[operator]

    def to_adapter(self) -> LoraAdapter:
        assert self.unet is not None
        state = get_peft_model_state_dict(self.unet, adapter_name=ADAPTER_NAME)
        return lora_state_to_adapter(state, self.alpha, {})

    def detach(self) -> None:
        if self.unet is not None:
            self.unet.delete_adapters(ADAPTER_NAME)  # type: ignore[operator]
            if not getattr(self.unet, "peft_config", None):
                self.unet.unload_lora()  # type: ignore[operator]  # no other PEFT adapter: drop the empty wrappers
            self.unet = None


class LoraTrainer:
    """One training run. ``train()`` resumes from ``run_dir`` when a checkpoint is there.

    ``backend`` is the adapter being trained (default: PEFT LoRA on ``config.targets``).
    ``train()`` returns the adapter; :attr:`finished` says whether it ran all its steps
    (``stop`` may end it early, after writing a checkpoint).
    """

    def __init__(
        self,
        pipe: StableDiffusionPipeline,
        data: TrainingData,
        config: LoraTrainingConfig,
        run_dir: Path | None = None,
        backend: AdapterBackend | None = None,
    ) -> None:
        self.pipe = pipe
        self.data = data
        self.config = config
        self.run_dir = Path(run_dir) if run_dir else None
        self.unet = pipe.unet
        self.backend: AdapterBackend = backend or PeftBackend(config.rank, config.lora_alpha, config.targets)
        self.prompts = PromptCache(pipe)
        self.latents = encode_images(pipe, data.images)
        self.prior_latents = encode_images(pipe, data.prior_images) if data.prior_images is not None else None
        self.step = 0
        self.losses: list[float] = []
        self.resumed_from = 0

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    # -- checkpoints -------------------------------------------------------------------------
    def _checkpoint_paths(self) -> tuple[Path, Path]:
        assert self.run_dir is not None
        return self.run_dir / "checkpoint.safetensors", self.run_dir / "checkpoint.json"

    def _save_checkpoint(self, optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter]) -> None:
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"param/{name}": p.detach().cpu().contiguous() for name, p in params.items()}
        for name, tensor in self.backend.frozen_state().items():
            tensors[f"frozen/{name}"] = tensor.detach().cpu().contiguous()
        for name, p in params.items():
            state = optimizer.state.get(p, {})
            for slot in ("exp_avg", "exp_avg_sq"):
                if slot in state:
                    tensors[f"{slot}/{name}"] = state[slot].detach().cpu().contiguous()
        weights, info = self._checkpoint_paths()
        optimizer_step = next((float(s["step"]) for s in optimizer.state.values() if "step" in s), 0.0)
        record = json.dumps({"step": self.step, "optimizer_step": optimizer_step, "losses": self.losses,
                             "config": self.config.to_dict()})
        # the weights carry their own step record, so one rename makes both current: a kill before the
        # copy in checkpoint.json is written cannot pair these weights with the previous step
        write_atomic(weights, save(tensors, metadata={CHECKPOINT_KEY: record}))
        write_atomic(info, record.encode())

    def _load_checkpoint(self, optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter]) -> bool:
        if self.run_dir is None:
            return False
        weights, info = self._checkpoint_paths()
        state = checkpoint_record(weights, info)
        if state is None:
            return False
        tensors = load_file(str(weights))
        if state.get("config", {}).get("steps", self.config.steps) != self.config.steps:
            raise ValueError(f"the checkpoint in {self.run_dir} is for {state['config']['steps']} steps, "
                             f"not {self.config.steps}")
        missing = [name for name in params if f"param/{name}" not in tensors]
        if missing:
            raise ValueError(f"the checkpoint in {self.run_dir} does not match this adapter ({missing[0]})")
        frozen = {k.removeprefix("frozen/"): v for k, v in tensors.items() if k.startswith("frozen/")}
        if frozen:
            self.backend.load_frozen_state(frozen)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[f"param/{name}"])
                if f"exp_avg/{name}" in tensors:
                    optimizer.state[p] = {
                        "step": torch.tensor(state["optimizer_step"]),
                        "exp_avg": tensors[f"exp_avg/{name}"].to(p.device).clone(),
                        "exp_avg_sq": tensors[f"exp_avg_sq/{name}"].to(p.device).clone(),
                    }
        self.step = int(state["step"])
        self.losses = [float(x) for x in state["losses"]]
        return True

    # -- training ----------------------------------------------------------------------------
    def train(self, on_progress: ProgressCallback | None = None, on_step: StepHook | None = None,
              stop: Callable[[], bool] | None = None) -> LoraAdapter:
        cfg = self.config
        unet = self.unet
        unet.requires_grad_(False)
        self.backend.attach(unet, cfg.seed)
        try:
            groups = self.backend.parameter_groups()
            params: dict[str, torch.nn.Parameter] = {}
            param_groups = []
            for named, scale in groups:
                for p in named.values():
                    p.requires_grad_(True)
                params.update(named)
                param_groups.append({"params": list(named.values()), "lr_scale": scale})
            optimizer = torch.optim.AdamW(param_groups, lr=cfg.learning_rate, weight_decay=1e-4)
            if self._load_checkpoint(optimizer, params):
                self.resumed_from = self.step
            self._loop(optimizer, params, on_progress, on_step, stop)
            return self.backend.to_adapter()
        finally:
            self.backend.detach()
            unet.requires_grad_(False)

    def _batch_generator(self, step: int) -> torch.Generator:
        # one generator per step, so a resumed run draws exactly the batches it would have drawn
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of the peak."""
        cfg = self.config
        lr = cfg.learning_rate * min(1.0, step / max(1, cfg.warmup_steps))
        return lr * (0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps))) * 0.9 + 0.1)

    def _loop(self, optimizer, params, on_progress, on_step, stop) -> None:  # type: ignore[no-untyped-def]
        cfg = self.config
        unet = self.unet
        started, start_step = time.perf_counter(), self.step
        unet.train()
        try:
            while self.step < cfg.steps:
                if stop is not None and stop():
                    if cfg.checkpoint_every:
                        self._save_checkpoint(optimizer, params)
                    break
                step = self.step + 1
                for group in optimizer.param_groups:
                    group["lr"] = self.learning_rate(step) * group.get("lr_scale", 1.0)
                loss = self.loss(step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
                optimizer.step()
                self.step = step
                self.losses.append(round(float(loss.item()), 5))
                if on_progress is not None:
                    rate = (time.perf_counter() - started) / max(1, self.step - start_step)
                    on_progress(TrainingProgress(step=self.step, total=cfg.steps, loss=float(loss.item()),
                                                 seconds_per_step=rate))
                if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                    self._save_checkpoint(optimizer, params)
                if on_step is not None:
                    unet.eval()
                    on_step(self.step)
                    unet.train()
        finally:
            unet.eval()

    def loss(self, step: int) -> torch.Tensor:
        """The training loss of ``step``: noise prediction (min-SNR weighted), prior, and CAT terms."""
        cfg = self.config
        unet = self.unet
        scheduler = self.pipe.scheduler
        alphas = scheduler.alphas_cumprod.to(unet.device)
        snr = alphas / (1 - alphas)
        n_prior = 0
        if self.prior_latents is not None:
            n_prior = max(1, int(round(cfg.batch_size * cfg.prior_fraction)))
        n_instance = max(1, cfg.batch_size - n_prior)
        g = self._batch_generator(step)
        index = torch.randint(0, len(self.latents), (n_instance,), generator=g)
        x0 = self.latents[index]
        captions = [self.data.captions[i] for i in index.tolist()]
        weights = torch.ones(n_instance)
        if n_prior:
            assert self.prior_latents is not None
            prior_index = torch.randint(0, len(self.prior_latents), (n_prior,), generator=g)
            x0 = torch.cat([x0, self.prior_latents[prior_index]])
            captions += [self.data.prior_captions[i] for i in prior_index.tolist()]
            weights = torch.cat([weights, torch.full((n_prior,), cfg.prior_weight)])
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=g)
        device, dtype = unet.device, unet.dtype  # a half-precision base trains float32 LoRA weights
        x0, noise, t, weights = x0.to(device), noise.to(device), t.to(device), weights.to(device)
        noisy = scheduler.add_noise(x0, noise, t).to(dtype)
        cond = self.prompts(captions).to(dtype)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        target = denoising_target(scheduler, x0, noise, t)  # the noise, or the velocity on a v-prediction base
        # min-SNR-gamma weighting: min(snr, gamma) / snr for epsilon, / (snr + 1) for v-prediction
        velocity = getattr(scheduler.config, "prediction_type", "epsilon") == "v_prediction"
        snr_weight = torch.clamp(snr[t], max=cfg.snr_gamma) / (snr[t] + 1 if velocity else snr[t])
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * snr_weight * weights).sum() / weights.sum()
        if cfg.lambda_cat > 0 and self.data.class_captions:
            loss = loss + cfg.lambda_cat * self.cat_loss(noisy[:n_instance], t[:n_instance],
                                                         [self.data.class_captions[i] for i in index.tolist()])
        return loss

    def cat_loss(self, noisy: torch.Tensor, t: torch.Tensor, class_captions: list[str]) -> torch.Tensor:
        """CAT: MSE between the adapted and the frozen base's noise prediction on the class captions."""
        class_cond = self.prompts(class_captions).to(self.unet.dtype)
        with torch.no_grad(), self.backend.disabled():
            base_pred = self.unet(noisy, t, encoder_hidden_states=class_cond).sample
        adapted = self.unet(noisy, t, encoder_hidden_states=class_cond).sample
        return F.mse_loss(adapted.float(), base_pred.float())


def checkpoint_record(weights: Path, info: Path) -> dict[str, Any] | None:
    """The step record of the checkpoint ``weights``: the one stored in its own header, or (a checkpoint
    written before records were stored there) the ``info`` file beside it; None without a checkpoint."""
    from safetensors import safe_open

    if not weights.exists():
        return None
    with safe_open(str(weights), framework="pt") as handle:
        stored = (handle.metadata() or {}).get(CHECKPOINT_KEY)
    if stored is not None:
        return dict(json.loads(stored))
    return dict(json.loads(info.read_text())) if info.exists() else None


def resume_state(run_dir: Path) -> dict[str, object] | None:
    """What a run folder's checkpoint says (step, config), or None when it has none."""
    return checkpoint_record(Path(run_dir) / "checkpoint.safetensors", Path(run_dir) / "checkpoint.json")
