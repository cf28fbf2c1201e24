"""Text to image on a loaded base: the one generation entry point, with per-image seeds and provenance."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    notices: list[str] = field(default_factory=list)


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


AdapterSets = Sequence[AdapterSpec] | Sequence[Sequence[AdapterSpec]]


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
    adapters: AdapterSets = (),
    fusion: str = "merge",
    fusion_options: dict[str, Any] | None = None,
    keep_adapters: bool = False,
) -> GenerationResult:
    """Render images of ``prompt`` (one prompt ``batch`` times, or one image per prompt of a list).

    Image i uses seed ``seed + i`` (or ``seed[i]`` when a list is given), drawn on the CPU, so any
    image is reproduced by generating it alone with its own seed. ``guidance``, ``width`` and
    ``height`` default to the base's own. ``adapters`` (one set for every image, or one set per
    image) are composed with the ``fusion`` method (see :mod:`fusion`) through the base's persistent
    fusion session (:class:`pipeline.fusion_host.FusionHost`) and detached afterwards, the base
    restored exactly (``keep_adapters``: left attached for a next call that swaps, as the runs of one
    render do). Images with different sets share one UNet pass when the method batches
    (:mod:`fusion.rows`: the dynamic merge, the gated schedule), else they are grouped by set, one run
    each, and ``notices`` says so. Images go through the pipeline ``CHUNK`` at a time;
    ``on_step(done, total)`` reports steps over all of them.
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
    per_row = _per_row(adapters, len(prompts))
    shared = per_row[0] if all(_set_key(row) == _set_key(per_row[0]) for row in per_row) else None
    job = _Job(base, prompts, seeds, negative_prompt, steps, guidance, width, height, on_step)
    try:
        if shared is not None:
            return job.run(shared, fusion, fusion_options)
        from fusion.methods import make_method
        from fusion.rows import batchable

        if make_method(fusion, **(fusion_options or {})).batches and batchable(per_row):
            return job.run_rows(per_row, fusion, fusion_options)
        return job.run_groups(per_row, fusion, fusion_options)
    finally:
        if not keep_adapters:
            base.fusion.release()


def _per_row(adapters: AdapterSets, count: int) -> list[list[AdapterSpec]]:
    if not adapters:
        return [[] for _ in range(count)]
    if isinstance(adapters[0], AdapterSpec):
        return [list(adapters) for _ in range(count)]  # type: ignore[arg-type]
    sets = [list(row) for row in adapters]  # type: ignore[union-attr]
    if len(sets) != count:
        raise ValueError(f"{len(sets)} adapter sets given for {count} images")
    return sets


def _set_key(specs: Sequence[AdapterSpec]) -> tuple[object, ...]:
    return tuple((id(s.adapter), s.name, s.weight, s.role, s.unet_weight, s.te_weight, repr(s.block_weights),
                  None if s.schedule is None else s.schedule.to_text()) for s in specs)


@dataclass
class _Job:
    """One generate() call's images and settings; ``run*`` render them through the base's fusion session."""

    base: LoadedBase
    prompts: list[str]
    seeds: list[int]
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    on_step: StepCallback | None

    def run(self, specs: Sequence[AdapterSpec], fusion: str, options: dict[str, Any] | None) -> GenerationResult:
        """Every image with the same adapters."""
        indices = list(range(len(self.prompts)))
        if not specs:
            self.base.fusion.release()
            return self._render(indices, self.base.pipe, [[]] * len(indices), None)
        session = self.base.fusion.apply(specs, fusion, options, self.steps)
        used = _adapter_provenance(specs, fusion, session.method.options())
        return self._render(indices, session.run, [used] * len(indices), None)

    def run_rows(self, per_row: list[list[AdapterSpec]], fusion: str, options: dict[str, Any] | None
                 ) -> GenerationResult:
        """One pass for images with different adapters: the union stacked, each row its own coefficients."""
        from fusion.rows import row_plan

        plan = row_plan(per_row)
        indices = list(range(len(self.prompts)))
        if not plan.entries:
            return self.run([], fusion, options)
        session = self.base.fusion.apply(plan.entries, fusion, options, self.steps)
        settings = session.method.options()
        used = [_adapter_provenance(specs, fusion, settings) for specs in per_row]

        def rows(chunk: range) -> None:
            session.set_rows(plan.unet[chunk.start : chunk.stop], plan.text[chunk.start : chunk.stop])

        try:
            return self._render(indices, session.run, used, rows)
        finally:
            session.clear_rows()

    def run_groups(self, per_row: list[list[AdapterSpec]], fusion: str, options: dict[str, Any] | None
                   ) -> GenerationResult:
        """A method that cannot batch different sets: one run per set, the images put back in order."""
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, specs in enumerate(per_row):
            groups.setdefault(_set_key(specs), []).append(index)
        images: dict[int, tuple[Image.Image, Provenance]] = {}
        totals = [-(-len(indices) // CHUNK) * self.steps for indices in groups.values()]  # steps of each run
        for number, indices in enumerate(groups.values()):
            part = _Job(self.base, [self.prompts[i] for i in indices], [self.seeds[i] for i in indices],
                        self.negative_prompt, self.steps, self.guidance, self.width, self.height,
                        _offset(self.on_step, sum(totals[:number]), sum(totals)))
            result = part.run(per_row[indices[0]], fusion, options)
            images.update(zip(indices, zip(result.images, result.provenance, strict=True), strict=True))
        order = sorted(images)
        return GenerationResult(
            images=[images[i][0] for i in order], provenance=[images[i][1] for i in order],
            notices=[f"fusion method {fusion!r} cannot give the images of one batch their own adapters; "
                     f"rendered {len(groups)} runs, one per adapter set"])

    def _render(self, indices: list[int], call: Callable[..., Any], used: list[list[dict[str, object]]],
                before_chunk: Callable[[range], None] | None) -> GenerationResult:
        base = self.base
        chunks = [range(start, min(start + CHUNK, len(indices))) for start in range(0, len(indices), CHUNK)]
        images: list[Image.Image] = []
        provenance: list[Provenance] = []
        for number, chunk in enumerate(chunks):
            generators = [torch.Generator(device="cpu").manual_seed(self.seeds[i]) for i in chunk]
            latents = _initial_latents(base, generators, self.width, self.height)
            if before_chunk is not None:
                before_chunk(chunk)
            started = time.perf_counter()
            with torch.inference_mode():
                output = call(
                    prompt=[self.prompts[i] for i in chunk],
                    negative_prompt=[self.negative_prompt] * len(chunk) if self.negative_prompt else None,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    width=self.width,
                    height=self.height,
                    latents=latents.to(base.pipe.device),
                    callback_on_step_end=_progress(self.on_step, number, len(chunks), self.steps),
                )
            elapsed = (time.perf_counter() - started) / len(chunk)
            images.extend(output.images)
            provenance.extend(
                Provenance(prompt=self.prompts[i], negative_prompt=self.negative_prompt, steps=self.steps,
                           sampler=base.sampler, guidance=self.guidance, seed=self.seeds[i], width=self.width,
                           height=self.height, model=base.name, model_hash=base.model_hash, attention=base.attention,
                           adapters=used[i], seconds=round(elapsed, 4))
                for i in chunk
            )
        return GenerationResult(images=images, provenance=provenance)


def _offset(on_step: StepCallback | None, done_before: int, total: int) -> StepCallback | None:
    """Progress of one of several runs as progress over all of them."""
    if on_step is None:
        return None
    return lambda done, _run_total: on_step(done_before + done, total)


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
