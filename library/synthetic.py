"""Synthetic LoRA adapters with random weights, for tests and benchmarks (never for images)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from library.layouts.model_layout import built_in_layout
from library.lora import LoraAdapter, LoraModule


def random_adapter(base: str = "toy", every: int = 9, rank: int = 4, alpha: float = 2.0, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> LoraAdapter:
    """A LoRA on every ``every``-th linear/conv module of a built-in base, with random weights."""
    layout = built_in_layout(base)
    generator = torch.Generator().manual_seed(seed)
    modules: dict[str, LoraModule] = {}
    for component, shapes in layout.modules.items():
        for path, shape in list(shapes.items())[::every]:
            if shape.kernel is not None:
                down = torch.randn(rank, shape.in_features, *shape.kernel, generator=generator)
                up = torch.randn(shape.out_features, rank, 1, 1, generator=generator)
            else:
                down = torch.randn(rank, shape.in_features, generator=generator)
                up = torch.randn(shape.out_features, rank, generator=generator)
            modules[f"{component}.{path}"] = LoraModule(down.to(dtype), up.to(dtype), alpha)
    return LoraAdapter(modules)


def small_kohya_tensors(rank: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two toy UNet modules in kohya form."""
    generator = torch.Generator().manual_seed(seed)
    prefix = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_"
    return {
        f"{prefix}to_k.lora_down.weight": torch.randn(rank, 384, generator=generator),
        f"{prefix}to_k.lora_up.weight": torch.randn(128, rank, generator=generator),
        f"{prefix}to_k.alpha": torch.tensor(float(rank)),
        f"{prefix}to_q.lora_down.weight": torch.randn(rank, 128, generator=generator),
        f"{prefix}to_q.lora_up.weight": torch.randn(128, rank, generator=generator),
        f"{prefix}to_q.alpha": torch.tensor(1.0),
    }


def write_small_kohya(path: Path, metadata: dict[str, str] | None = None, seed: int = 0) -> Path:
    save_file(small_kohya_tensors(seed=seed), str(path), metadata=metadata or {"ss_output_name": path.stem})
    return path
