"""Break-for-Make (Xu et al. 2024): content and style adapters in separated parameter subspaces.

Each target linear layer W [out, in] gets an update ``(alpha / r) * up @ down`` with

    up   = [A; B]    rows:    A [rows, r] frozen,  B [out - rows, r] learnable
    down = [C | D]   columns: C [r, cols] frozen,  D [r, in - cols]  learnable

(``rows = round(frozen * out)``, ``cols = round(frozen * in)``, the split
:mod:`fusion.methods.b4m` reads back from the metadata ``medley.b4m.frozen``).
A, C and the starting D are disjoint random row sets of one matrix with orthogonal
columns (C^T, D^T and A stacked), B starts at zero. The
initialisation is a pure function of (seed, module name), so a content run and a
style run with the same seed share A and C exactly.

- break: the content adapter learns D on the content images while B learns slowly
  (``slow`` times the learning rate); the style adapter mirrors it (B fast, D slow);
- make: the style adapter's D is replaced by the content adapter's D, giving
  ``[A; B_style] [C | D_content]``, which is fine-tuned on both image sets together.
  The frozen halves come from the two adapters: the orthogonal initialisation is
  *not* run again after loading them (the released code re-initialises there, which
  throws away what the first stage learnt).

Implemented with plain forward hooks on the UNet's ``nn.Linear`` modules, driven by
:class:`training.lora_trainer.LoraTrainer` through :class:`B4MBackend`.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion.methods.b4m import METADATA_FROZEN, METADATA_ROLE
from library.lora import LoraAdapter, LoraModule
from library.vocabulary import B4M_ROLES
from training.lora_trainer import (
    ATTENTION_TARGETS,
    LoraTrainer,
    LoraTrainingConfig,
    ProgressCallback,
    TrainingData,
)

BASIS_ROWS = 1280  # the reference implementation draws A and C from a 1280-row orthonormal basis


def split_sizes(out_features: int, in_features: int, frozen: float) -> tuple[int, int]:
    """(frozen rows of up, frozen columns of down), as :mod:`fusion.methods.b4m` computes them."""
    return round(frozen * out_features), round(frozen * in_features)


def orthogonal_init(name: str, out_features: int, in_features: int, rank: int, frozen: float,
                    seed: int) -> dict[str, torch.Tensor]:
    """A, B, C, D of one module (see the module docstring); a pure function of its arguments.

    One matrix Q [in + rows, r] with orthonormal columns is drawn and its rows dealt out at
    random: ``cols`` rows become C^T, ``in - cols`` rows D^T, ``rows`` rows A; so
    ``C C^T + D D^T + A^T A`` is a multiple of the identity. Q is scaled to entries of about
    1/sqrt(1280), the reference implementation's basis (a small initial update on any base).
    """
    rows, cols = split_sizes(out_features, in_features, frozen)
    size = in_features + rows
    if size < rank:
        raise ValueError(f"{name}: rank {rank} is larger than the module allows ({size})")
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    basis, _ = torch.linalg.qr(torch.randn(size, rank, generator=generator, dtype=torch.float64))
    basis = basis * math.sqrt(size / max(size, BASIS_ROWS))
    order = torch.randperm(size, generator=generator)
    c_rows, d_rows, a_rows = order[:cols], order[cols:in_features], order[in_features:]
    return {
        "A": basis[a_rows].float().contiguous(),
        "B": torch.zeros(out_features - rows, rank),
        "C": basis[c_rows].T.float().contiguous(),
        "D": basis[d_rows].T.float().contiguous(),
    }


class _Layer:
    """The partly learnable projections of one linear module, applied by a forward hook."""

    def __init__(self, module: nn.Linear, parts: dict[str, torch.Tensor], scale: float) -> None:
        device = module.weight.device
        self.module = module
        self.A = parts["A"].to(device)
        self.C = parts["C"].to(device)
        self.B = nn.Parameter(parts["B"].to(device).clone())
        self.D = nn.Parameter(parts["D"].to(device).clone())
        self.scale = scale
        self.enabled = True
        self.handle = module.register_forward_hook(self._hook)

    def down(self) -> torch.Tensor:
        return torch.cat([self.C, self.D], dim=1)

    def up(self) -> torch.Tensor:
        return torch.cat([self.A, self.B], dim=0)

    def _hook(self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return output
        x = args[0]
        delta = F.linear(F.linear(x.to(self.D.dtype), self.down()), self.up())
        return output + (self.scale * delta).to(output.dtype)


def find_targets(unet: nn.Module, targets: Sequence[str]) -> dict[str, nn.Linear]:
    """Modules whose name is, or ends with ``.``, one of ``targets``; all must be linear."""
    found: dict[str, nn.Linear] = {}
    for name, module in unet.named_modules():
        if ".base_layer" in name or ".lora_" in name:
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            module = getattr(module, "base_layer", module)  # a PEFT wrapper left behind: hook the layer inside
            if not isinstance(module, nn.Linear):
                raise ValueError(f"Break-for-Make trains linear layers only; {name} is a {type(module).__name__}")
            found[name] = module
    if not found:
        raise ValueError(f"no module of the UNet matches the targets {', '.join(targets)}")
    return found


class B4MBackend:
    """The adapter of one Break-for-Make stage, for :class:`~training.lora_trainer.LoraTrainer`.

    ``role`` content: D learns at the full rate and B at ``slow`` times it; style: the reverse;
    combined: both at the full rate. ``init`` (canonical adapter) replaces the orthogonal
    initialisation, as the make stage needs.
    """

    def __init__(self, role: str, rank: int, alpha: float, targets: Sequence[str] = ATTENTION_TARGETS,
                 frozen: float = 0.5, slow: float = 0.1, init: LoraAdapter | None = None) -> None:
        if role not in B4M_ROLES:
            raise ValueError(f"Break-for-Make role must be one of {', '.join(B4M_ROLES)}, got {role!r}")
        if not 0.0 < frozen < 1.0:
            raise ValueError(f"the frozen fraction must lie in (0, 1), got {frozen}")
        self.role, self.rank, self.alpha = role, rank, float(alpha)
        self.targets, self.frozen, self.slow, self.init = list(targets), frozen, slow, init
        self.layers: dict[str, _Layer] = {}

    def attach(self, unet: torch.nn.Module, seed: int) -> None:
        for name, module in find_targets(unet, self.targets).items():
            out_features, in_features = module.weight.shape
            if self.init is not None:
                parts = self._parts_from(name, out_features, in_features)
            else:
                parts = orthogonal_init(name, out_features, in_features, self.rank, self.frozen, seed)
            self.layers[name] = _Layer(module, parts, self.alpha / self.rank)

    def _parts_from(self, name: str, out_features: int, in_features: int) -> dict[str, torch.Tensor]:
        assert self.init is not None
        module = self.init.modules.get(f"unet.{name}")
        if module is None or module.down.shape != (self.rank, in_features) or module.up.shape != (out_features,
                                                                                                    self.rank):
            raise ValueError(f"the starting adapter has no rank-{self.rank} module for unet.{name}")
        rows, cols = split_sizes(out_features, in_features, self.frozen)
        down, up = module.down.float(), module.up.float()
        return {"A": up[:rows], "B": up[rows:], "C": down[:, :cols], "D": down[:, cols:]}

    def parameter_groups(self) -> list[tuple[dict[str, torch.nn.Parameter], float]]:
        ups = {f"{name}.b4m_up": layer.B for name, layer in self.layers.items()}
        downs = {f"{name}.b4m_down": layer.D for name, layer in self.layers.items()}
        if self.role == "content":
            return [(downs, 1.0), (ups, self.slow)]
        if self.role == "style":
            return [(ups, 1.0), (downs, self.slow)]
        return [({**downs, **ups}, 1.0)]

    def frozen_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            state[f"{name}.b4m_A"] = layer.A
            state[f"{name}.b4m_C"] = layer.C
        return state

    def load_frozen_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, layer in self.layers.items():
            layer.A = tensors[f"{name}.b4m_A"].to(layer.A.device)
            layer.C = tensors[f"{name}.b4m_C"].to(layer.C.device)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        for layer in self.layers.values():
            layer.enabled = False
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.enabled = True

    def to_adapter(self) -> LoraAdapter:
        modules = {
            f"unet.{name}": LoraModule(down=layer.down().detach().float().cpu().clone(),
                                       up=layer.up().detach().float().cpu().clone(), alpha=self.alpha)
            for name, layer in self.layers.items()
        }
        metadata = {METADATA_ROLE: self.role, METADATA_FROZEN: repr(float(self.frozen)),
                    "medley.b4m.slow": repr(float(self.slow))}
        return LoraAdapter(modules=modules, metadata=metadata, source_format="medley")

    def detach(self) -> None:
        for layer in self.layers.values():
            layer.handle.remove()
        self.layers = {}


def check_pair(content: LoraAdapter, style: LoraAdapter, frozen: float = 0.5, tolerance: float = 1e-4) -> None:
    """Raise ValueError unless ``content`` and ``style`` share their frozen halves (one B4M initialisation)."""
    if set(content.modules) != set(style.modules):
        raise ValueError("the Break-for-Make content and style adapters target different modules")
    for target, c in content.modules.items():
        s = style.modules[target]
        if c.down.shape != s.down.shape or c.up.shape != s.up.shape:
            raise ValueError(f"the content and style adapters differ in shape at {target}")
        rows, cols = split_sizes(c.out_features, c.in_features, frozen)
        same_a = torch.allclose(c.up[:rows].float(), s.up[:rows].float(), atol=tolerance)
        same_c = torch.allclose(c.down[:, :cols].float(), s.down[:, :cols].float(), atol=tolerance)
        if not (same_a and same_c):
            raise ValueError(f"the content and style adapters do not share their frozen halves at {target}: "
                             "train both with --b4m and the same --seed, rank and targets")


def splice(content: LoraAdapter, style: LoraAdapter, frozen: float = 0.5) -> LoraAdapter:
    """The make stage's start: the style adapter with the content adapter's learnt half of down.

    ``up = [A; B_style]``, ``down = [C | D_content]`` per module; nothing is re-initialised.
    """
    check_pair(content, style, frozen)
    modules: dict[str, LoraModule] = {}
    for target, c in content.modules.items():
        s = style.modules[target]
        _, cols = split_sizes(c.out_features, c.in_features, frozen)
        down = torch.cat([s.down[:, :cols], c.down[:, cols:]], dim=1).float().clone()
        modules[target] = LoraModule(down=down, up=s.up.float().clone(), alpha=s.alpha)
    return LoraAdapter(modules=modules, metadata={METADATA_ROLE: "combined", METADATA_FROZEN: repr(float(frozen))})


def combine_data(content: TrainingData, style: TrainingData) -> TrainingData:
    """Both image sets as one (the make stage trains on both); CAT class captions kept when both have them."""
    class_captions: list[str] = []
    if content.class_captions and style.class_captions:
        class_captions = content.class_captions + style.class_captions
    prior_images, prior_captions = content.prior_images, content.prior_captions
    if style.prior_images is not None:
        if prior_images is None:
            prior_images, prior_captions = style.prior_images, style.prior_captions
        else:
            prior_images = np.concatenate([prior_images, style.prior_images])
            prior_captions = prior_captions + style.prior_captions
    return TrainingData(images=np.concatenate([content.images, style.images]),
                        captions=content.captions + style.captions, prior_images=prior_images,
                        prior_captions=list(prior_captions), class_captions=class_captions)


@dataclass
class B4MConfig:
    """One Break-for-Make run: the shared training settings, then the make stage's own."""

    training: LoraTrainingConfig
    frozen: float = 0.5
    slow: float = 0.1  # learning-rate factor of the half that learns slowly in the break stage
    make_steps: int = 100
    make_lr_scale: float = 0.5


@dataclass
class B4MResult:
    content: LoraAdapter
    style: LoraAdapter
    combined: LoraAdapter


def stage_trainer(pipe, data: TrainingData, config: LoraTrainingConfig, role: str,  # type: ignore[no-untyped-def]
                  frozen: float = 0.5, slow: float = 0.1, init: LoraAdapter | None = None,
                  run_dir: Path | None = None) -> LoraTrainer:
    """A :class:`LoraTrainer` for one stage (resumable from ``run_dir`` like any other run)."""
    backend = B4MBackend(role, config.rank, config.lora_alpha, config.targets, frozen=frozen, slow=slow, init=init)
    return LoraTrainer(pipe, data, config, run_dir=run_dir, backend=backend)


def make_config(config: B4MConfig) -> LoraTrainingConfig:
    from dataclasses import replace

    base = config.training
    return replace(base, steps=config.make_steps, learning_rate=base.learning_rate * config.make_lr_scale,
                   warmup_steps=min(base.warmup_steps, max(1, config.make_steps // 10)))


def train_break_for_make(pipe, content: TrainingData, style: TrainingData, config: B4MConfig,  # type: ignore[no-untyped-def]
                         run_dir: Path | None = None, on_progress: ProgressCallback | None = None,
                         on_stage: Callable[[str], None] | None = None) -> B4MResult:
    """Break (content, then style, same initialisation) and make (spliced, fine-tuned on both sets).

    With ``run_dir`` every stage checkpoints into its own subfolder and resumes from it.
    """
    adapters: dict[str, LoraAdapter] = {}
    for role, data in (("content", content), ("style", style)):
        if on_stage is not None:
            on_stage(role)
        folder = run_dir / role if run_dir is not None else None
        trainer = stage_trainer(pipe, data, config.training, role, config.frozen, config.slow, run_dir=folder)
        adapters[role] = trainer.train(on_progress=on_progress)
    if on_stage is not None:
        on_stage("combined")
    start = splice(adapters["content"], adapters["style"], config.frozen)
    if config.make_steps > 0:
        folder = run_dir / "combined" if run_dir is not None else None
        trainer = stage_trainer(pipe, combine_data(content, style), make_config(config), "combined", config.frozen,
                                init=start, run_dir=folder)
        combined = trainer.train(on_progress=on_progress)
    else:
        combined = start
    return B4MResult(content=adapters["content"], style=adapters["style"], combined=combined)
