"""Text to image on a loaded base: the one generation entry point, with per-image seeds and provenance."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from fusion import AdapterSpec
from pipeline.base import LoadedBase
from pipeline.provenance import Provenance

StepCallback = Callable[[int, int], None]
MAX_BATCH = 64  # images of one prompt in one call
MAX_IMAGES = 10_000  # images of one call given a list of prompts
CHUNK = 32  # images per pipeline call


@dataclass
class GenerationResult:
    images: list[Image.Image]
    provenance: list[Provenance]


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def image_prompts(prompt: str | Sequence[str], batch: int | None) -> list[str]:
    if isinstance(prompt, str):
        count = 1 if batch is None else batch
        _check("batch", count, 1, MAX_BATCH)
        prompts = [prompt] * count
    else:
        prompts = list(prompt)
        if batch is not None and batch != len(prompts):
            raise ValueError(f"batch {batch} does not match the {len(prompts)} prompts given")
        _check("the number of images", len(prompts), 1, MAX_IMAGES)
    for text in prompts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the prompt is empty")
    return prompts


def image_seeds(seed: int | Sequence[int], count: int) -> list[int]:
    seeds = [int(seed) + i for i in range(count)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds given for {count} images")
    for value in seeds:
        if value < 0 or value >= 2**63:
            raise ValueError(f"seed must be a non-negative 64-bit integer, got {value}")
    return seeds


def _adapter_provenance(adapters: Sequence[AdapterSpec], fusion: str, settings: dict[str, Any]
                        ) -> list[dict[str, object]]:
    return [
        {"alias": spec.name, "weight": spec.weight, "role": spec.role, "fusion": fusion,
         "hash": spec.adapter.metadata.get("medley.sha256", "")[:12],
         **({"fusion_options": settings} if settings else {})}
        for spec in adapters
    ]


def generate(
    base: LoadedBase,
    prompt: str | Sequence[str],
    negative_prompt: str = "",
    seed: int | Sequence[int] = 0,
    steps: int = 20,
    guidance: float | None = None,
    width: int | None = None,
    height: int | None = None,
    batch: int | None = None,
    on_step: StepCallback | None = None,
    adapters: Sequence[AdapterSpec] = (),
    fusion: str = "merge",
    fusion_options: dict[str, Any] | None = None,
    keep_adapters: bool = False,
) -> GenerationResult:
    """Render images of ``prompt`` (one prompt ``batch`` times, or one image per prompt of a list).

    Image i uses seed ``seed + i`` (or ``seed[i]`` when a list is given), drawn on the CPU, so any
    image is reproduced exactly by generating it alone with its own seed. ``guidance``, ``width``
    and ``height`` default to the base's own. ``adapters`` are composed with the ``fusion`` method
    (see :mod:`fusion`) through the base's persistent fusion session (:class:`pipeline.fusion_host.
    FusionHost`) and detached afterwards, the base restored exactly (``keep_adapters``: left attached
    for a next call that swaps, as the runs of one render do). Images go through the pipeline
    ``CHUNK`` at a time; ``on_step(done, total)`` reports steps over all of them.
    """
    prompts = image_prompts(prompt, batch)
    seeds = image_seeds(seed, len(prompts))
    _check("steps", steps, 1, 500)
    guidance = base.default_guidance if guidance is None else float(guidance)
    width = width or base.default_size
    height = height or base.default_size
    multiple = int(base.pipe.vae_scale_factor)
    for name, value in (("width", width), ("height", height)):
        _check(name, value, multiple, 4096)
        if value % multiple:
            raise ValueError(f"{name} must be a multiple of {multiple}, got {value}")
    if adapters:
        session = base.fusion.apply(adapters, fusion, fusion_options, steps)
        used = _adapter_provenance(adapters, fusion, session.method.options())
        call: Callable[..., Any] = session.run
    else:
        base.fusion.release()
        used, call = [], base.pipe
    try:
        return _render(base, prompts, seeds, negative_prompt, steps, guidance, width, height, on_step, call, used)
    finally:
        if adapters and not keep_adapters:
            base.fusion.release()


def _render(base: LoadedBase, prompts: list[str], seeds: list[int], negative_prompt: str, steps: int,
            guidance: float, width: int, height: int, on_step: StepCallback | None, call: Callable[..., Any],
            used: list[dict[str, object]]) -> GenerationResult:
    chunks = [range(start, min(start + CHUNK, len(prompts))) for start in range(0, len(prompts), CHUNK)]
    images: list[Image.Image] = []
    provenance: list[Provenance] = []
    for number, chunk in enumerate(chunks):
        generators = [torch.Generator(device="cpu").manual_seed(seeds[i]) for i in chunk]
        latents = _initial_latents(base, generators, width, height)
        started = time.perf_counter()
        with torch.inference_mode():
            output = call(
                prompt=[prompts[i] for i in chunk],
                negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=width,
                height=height,
                latents=latents.to(base.pipe.device),
                callback_on_step_end=_progress(on_step, number, len(chunks), steps),
            )
        elapsed = (time.perf_counter() - started) / len(chunk)
        images.extend(output.images)
        provenance.extend(
            Provenance(prompt=prompts[i], negative_prompt=negative_prompt, steps=steps, sampler=base.sampler,
                       guidance=guidance, seed=seeds[i], width=width, height=height, model=base.name,
                       model_hash=base.model_hash, attention=base.attention, adapters=used,
                       seconds=round(elapsed, 4))
            for i in chunk
        )
    return GenerationResult(images=images, provenance=provenance)


def _progress(on_step: StepCallback | None, number: int, chunks: int, steps: int) -> Callable[..., Any] | None:
    """The pipeline's step callback reporting ``on_step(done, total)`` over every chunk."""
    if on_step is None:
        return None

    def callback(pipe: Any, step_index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        on_step(number * steps + step_index + 1, chunks * steps)
        return kwargs

    return callback


def _initial_latents(base: LoadedBase, generators: list[torch.Generator], width: int, height: int) -> torch.Tensor:
    """Draw each image's starting noise from its own CPU generator (device independent)."""
    pipe = base.pipe
    scale = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // scale, width // scale)
    dtype = pipe.unet.dtype
    noise = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    return torch.cat(noise).to(dtype)
