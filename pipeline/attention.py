"""Attention backend: xformers on CUDA when it is installed, PyTorch SDPA otherwise."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

BACKENDS = ("auto", "xformers", "sdpa")


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def choose_attention(on_cuda: bool, prefer: str = "auto") -> str:
    """The backend :func:`configure_attention` uses on a CUDA device (``on_cuda``) or not: "xformers" or "sdpa".

    xformers is used only with a CUDA device and the package present; asking for it otherwise is an error.
    (Nothing is imported here, so ``medley doctor`` can say what generation would use.)
    """
    if prefer not in BACKENDS:
        raise ValueError(f"unknown attention backend {prefer!r}; choose auto, xformers or sdpa")
    usable = on_cuda and xformers_available()
    if prefer == "xformers" and not usable:
        raise RuntimeError("xformers attention needs a CUDA device and `pip install medley[cuda]`")
    return "xformers" if prefer in ("auto", "xformers") and usable else "sdpa"


def configure_attention(pipe: DiffusionPipeline, prefer: str = "auto") -> str:
    """Set the attention kernel of ``pipe`` and return its name ("xformers" or "sdpa"): see :func:`choose_attention`."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    backend = choose_attention(pipe.device.type == "cuda", prefer)
    if backend == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
        return backend
    unet = getattr(pipe, "unet", None)
    if unet is not None and hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        unet.set_attn_processor(AttnProcessor2_0())
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        vae.set_attn_processor(AttnProcessor2_0())
    return backend
