"""Random adapters for tests and benchmarks, and their diffusers-PEFT form."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from library.lora import LoraAdapter, LoraModule

ATTENTION_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def random_lora(
    model: nn.Module,
    rank: int = 4,
    seed: int = 0,
    targets: Iterable[str] = ATTENTION_TARGETS,
    component: str = "unet",
    alpha: float | None = None,
    strength: float = 1.0,
    metadata: dict[str, str] | None = None,
) -> LoraAdapter:
    """A LoRA with random down/up on every Linear/Conv2d of ``model`` whose name ends with a target."""
    generator = torch.Generator().manual_seed(seed)
    suffixes = tuple("." + t for t in targets)
    modules: dict[str, LoraModule] = {}
    for name, module in model.named_modules():
        if not name.endswith(suffixes):
            continue
        if isinstance(module, nn.Linear):
            down = torch.randn(rank, module.in_features, generator=generator) / module.in_features**0.5
            up = torch.randn(module.out_features, rank, generator=generator) * strength / rank**0.5
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            fan_in = module.in_channels * kh * kw
            down = torch.randn(rank, module.in_channels, kh, kw, generator=generator) / fan_in**0.5
            up = torch.randn(module.out_channels, rank, 1, 1, generator=generator) * strength / rank**0.5
        else:
            continue
        modules[f"{component}.{name}"] = LoraModule(down=down, up=up, alpha=float(rank if alpha is None else alpha))
    return LoraAdapter(modules, metadata=dict(metadata or {}))


def diffusers_state_dict(adapter: LoraAdapter) -> dict[str, torch.Tensor]:
    """The adapter as a diffusers PEFT state dict (``unet.<path>.lora_A.weight``...), its scale
    (alpha / r) folded into ``lora_B`` so that it loads with diffusers' default alpha = r."""
    state: dict[str, torch.Tensor] = {}
    for target, module in adapter.modules.items():
        state[f"{target}.lora_A.weight"] = module.down.clone().contiguous()
        state[f"{target}.lora_B.weight"] = (module.up * module.scale).contiguous()
    return state
