"""Text to image on a loaded base, with per-image seeds and provenance."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from fusion import AdapterSpec, compose
from pipeline.base import LoadedBase
from pipeline.provenance import Provenance

StepCallback = Callable[[int, int], None]


@dataclass
class GenerationResult:
    images: list[Image.Image]
    provenance: list[Provenance]


@contextlib.contextmanager
def _adapters_applied(
    base: LoadedBase, adapters: Sequence[AdapterSpec], fusion: str, steps: int, options: dict[str, Any] | None
) -> Iterator[list[dict[str, object]]]:
    """Attach ``adapters`` with ``fusion`` for the duration of one generation; yields their provenance."""
    if not adapters:
        yield []
        return
    with compose(base.pipe, list(adapters), fusion, num_inference_steps=steps, **(options or {})) as session:
        settings = session.method.options()  # what the method ran with (gated: curves, guidance gains, gate)
        yield [
            {"alias": spec.name, "weight": spec.weight, "role": spec.role, "fusion": fusion,
             "hash": spec.adapter.metadata.get("medley.sha256", "")[:12],
             **({"fusion_options": settings} if settings else {})}
            for spec in adapters
        ]


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def generate(
    base: LoadedBase,
    prompt: str,
    negative_prompt: str = "",
    seed: int = 0,
    steps: int = 20,
    guidance: float | None = None,
    width: int | None = None,
    height: int | None = None,
    batch: int = 1,
    on_step: StepCallback | None = None,
    adapters: Sequence[AdapterSpec] = (),
    fusion: str = "merge",
    fusion_options: dict[str, Any] | None = None,
) -> GenerationResult:
    """Render ``batch`` images of ``prompt``; image i uses seed ``seed + i``.

    So any image of a batch is reproduced exactly by generating it alone with its
    own seed. ``guidance``, ``width`` and ``height`` default to the base's own.
    ``adapters`` are composed with the ``fusion`` method (see :mod:`fusion`) for this
    call only; the base is restored afterwards.
    """
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    _check("steps", steps, 1, 500)
    _check("batch", batch, 1, 64)
    if seed < 0 or seed >= 2**63:
        raise ValueError(f"seed must be a non-negative 64-bit integer, got {seed}")
    guidance = base.default_guidance if guidance is None else float(guidance)
    width = width or base.default_size
    height = height or base.default_size
    multiple = int(base.pipe.vae_scale_factor)
    for name, value in (("width", width), ("height", height)):
        _check(name, value, multiple, 4096)
        if value % multiple:
            raise ValueError(f"{name} must be a multiple of {multiple}, got {value}")
    device = base.pipe.device
    generators = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(batch)]
    latents = _initial_latents(base, generators, width, height)
    callback = None
    if on_step is not None:

        def callback(pipe, step_index, timestep, kwargs):  # type: ignore[no-untyped-def]
            on_step(step_index + 1, steps)
            return kwargs

    started = time.perf_counter()
    with _adapters_applied(base, adapters, fusion, steps, fusion_options) as used, torch.inference_mode():
        output = base.pipe(
            prompt=[prompt] * batch,
            negative_prompt=[negative_prompt] * batch if negative_prompt else None,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            latents=latents.to(device),
            callback_on_step_end=callback,
        )
    elapsed = (time.perf_counter() - started) / batch
    provenance = [
        Provenance(
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            sampler=base.sampler,
            guidance=guidance,
            seed=seed + i,
            width=width,
            height=height,
            model=base.name,
            model_hash=base.model_hash,
            attention=base.attention,
            adapters=used,
            seconds=round(elapsed, 4),
        )
        for i in range(batch)
    ]
    return GenerationResult(images=list(output.images), provenance=provenance)


def _initial_latents(base: LoadedBase, generators: list[torch.Generator], width: int, height: int) -> torch.Tensor:
    """Draw each image's starting noise from its own CPU generator (device independent)."""
    pipe = base.pipe
    scale = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // scale, width // scale)
    dtype = pipe.unet.dtype
    noise = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    return torch.cat(noise).to(dtype)


def generate_batch(
    base: LoadedBase,
    prompts: list[str],
    seeds: list[int],
    steps: int = 20,
    guidance: float | None = None,
    negative_prompt: str = "",
    batch_size: int = 32,
    adapters: Sequence[AdapterSpec] = (),
    fusion: str = "merge",
    fusion_options: dict[str, Any] | None = None,
) -> list[Image.Image]:
    """One image per (prompt, seed), rendered ``batch_size`` at a time (for benchmarks and sweeps)."""
    if len(prompts) != len(seeds):
        raise ValueError("prompts and seeds must have the same length")
    guidance = base.default_guidance if guidance is None else float(guidance)
    size = base.default_size
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[start : start + batch_size]]
        latents = _initial_latents(base, generators, size, size)
        with _adapters_applied(base, adapters, fusion, steps, fusion_options), torch.inference_mode():
            output = base.pipe(
                prompt=chunk,
                negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=size,
                height=size,
                latents=latents.to(base.pipe.device),
            )
        images.extend(output.images)
    return images
