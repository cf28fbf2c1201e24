"""A tiny random-weight toy base for tests and smoke runs (no assets needed, offline).

Same architecture and module names as the embedded base (so adapters trained on it are
``toy`` adapters), random weights, the real MiniLM text encoder from its package.
"""

from __future__ import annotations

import hashlib

import torch


def random_toy_base(seed: int = 0):  # type: ignore[no-untyped-def]
    """A :class:`pipeline.base.LoadedBase` of the toy architecture with random weights, on the CPU."""
    from pipeline.attention import configure_attention
    from pipeline.base import LoadedBase
    from pipeline.toy_base import assemble, new_unet, new_vae

    torch.manual_seed(seed)
    pipe = assemble(new_vae(), new_unet())
    pipe.to("cpu")
    pipe.set_progress_bar_config(disable=True)
    name = f"toy-random-{seed}"
    return LoadedBase(pipe=pipe, name=name, family="toy", model_hash=hashlib.sha256(name.encode()).hexdigest()[:10],
                      attention=configure_attention(pipe, "sdpa"), default_size=32, default_guidance=3.0,
                      sampler="DDIM")
