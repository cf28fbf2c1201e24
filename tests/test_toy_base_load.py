"""The toy base assembled from its parts is the pipeline DiffusionPipeline.from_pretrained gave, image for image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from library.quiet import known_warnings_muted
from pipeline.toy_base import TOY_BASE_DIR, load_text_encoder, load_toy_base


@pytest.fixture(scope="module")
def pipes() -> tuple[StableDiffusionPipeline, StableDiffusionPipeline]:
    encoder, tokenizer = load_text_encoder()
    with known_warnings_muted():
        reference = StableDiffusionPipeline.from_pretrained(  # how the toy base was loaded before
            str(TOY_BASE_DIR), text_encoder=encoder, tokenizer=tokenizer, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False, torch_dtype=torch.float32, local_files_only=True)
    return load_toy_base(), reference


def test_same_weights_scheduler_and_config(pipes: tuple[StableDiffusionPipeline, StableDiffusionPipeline]) -> None:
    assembled, reference = pipes
    for part in ("unet", "vae"):
        ours, theirs = getattr(assembled, part).state_dict(), getattr(reference, part).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(ours[k].dtype == torch.float32 and torch.equal(ours[k], theirs[k]) for k in ours), part
        assert not getattr(assembled, part).training
    assert type(assembled.scheduler) is type(reference.scheduler)
    assert dict(assembled.scheduler.config) == dict(reference.scheduler.config)
    assert dict(assembled.config) == dict(reference.config)


def test_same_images(pipes: tuple[StableDiffusionPipeline, StableDiffusionPipeline]) -> None:
    images = []
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
        out = pipe(["a red circle on a blue background", "a green square"], num_inference_steps=6,
                   guidance_scale=3.0, height=32, width=32, generator=torch.Generator().manual_seed(0),
                   output_type="np")
        images.append(out.images)
    np.testing.assert_array_equal(images[0], images[1])
