"""The loss the AutoLoRA-style gate is trained with (the script: ``python -m training.fusion_gate``).

AutoLoRA's fine-grained gate computes fusion weights per layer and timestep; Medley trains it
with the ordinary denoising objective on images of the composed concepts, the base and the
adapters frozen, so it learns how the adapters' outputs should mix. Typical loop::

    gate = FusionGate.for_unet(pipe.unet, ALL_TARGETS)  # merge-equivalent at start
    optimiser = torch.optim.AdamW(gate.parameters(), lr=3e-3, weight_decay=0.0)
    for latents, prompt_embeds, content, style in batches:   # latents: composed ground truth
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (latents.shape[0],))
        loss = gate_loss(pipe, gate, content, style, latents, noise, t, prompt_embeds)
        loss.backward(); optimiser.step(); optimiser.zero_grad()
    gate.save()                                       # assets/fusion-gate/

Only the gate's parameters need gradients: freeze the UNet (``pipe.unet.requires_grad_(False)``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fusion.gate import FusionGate
from fusion.session import compose
from fusion.spec import AdapterSpec
from library.lora import LoraAdapter


def denoising_loss(
    pipe: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor
) -> torch.Tensor:
    """MSE between the UNet's prediction on ``latents`` noised to ``timesteps`` and its target
    (the noise, or the velocity for v-prediction schedulers), under whatever is composed now."""
    scheduler = pipe.scheduler
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = pipe.unet(noisy, timesteps, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
    return F.mse_loss(prediction.float(), denoising_target(scheduler, latents, noise, timesteps).float())


def denoising_target(scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                     ) -> torch.Tensor:
    """What the UNet is trained to predict, by the scheduler's ``prediction_type``: the noise (epsilon, SD1/
    SDXL, the toy base) or the velocity (v_prediction, SD2-v). Every trainer (the gate, DreamBooth-LoRA,
    Break-for-Make) regresses to this."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"training supports epsilon and v_prediction schedulers, not {kind!r}")


def _spec(adapter: AdapterSpec | LoraAdapter, role: str) -> AdapterSpec:
    if isinstance(adapter, AdapterSpec):
        return adapter
    return AdapterSpec(name=role, adapter=adapter, role=role)


def gate_loss(
    pipe: Any,
    gate: FusionGate,
    content: AdapterSpec | LoraAdapter,
    style: AdapterSpec | LoraAdapter,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    prompt_embeds: torch.Tensor,
) -> torch.Tensor:
    """Denoising loss of the content + style composition through ``gate`` on ground-truth
    latents of the composed concept; gradients reach the gate's parameters."""
    specs = [_spec(content, "content"), _spec(style, "style")]
    with compose(pipe, specs, method="gated", gate=gate):
        return denoising_loss(pipe, latents, noise, timesteps, prompt_embeds)
