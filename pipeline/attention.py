"""Attention backend: xformers on CUDA when it is installed, PyTorch SDPA otherwise."""

from __future__ import annotations

import importlib.util

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0


def xformers_available() -> bool:
    return importlib.util.find_spec("xformers") is not None


def configure_attention(pipe: DiffusionPipeline, prefer: str = "auto") -> str:
    """Pick the attention kernel for ``pipe`` and return its name ("xformers" or "sdpa").

    ``prefer`` is "auto", "xformers" or "sdpa". xformers is used only with a CUDA
    device and the package present; asking for it otherwise is an error.
    """
    if prefer not in ("auto", "xformers", "sdpa"):
        raise ValueError(f"unknown attention backend {prefer!r}; choose auto, xformers or sdpa")
    on_cuda = pipe.device.type == "cuda"
    if prefer == "xformers" and not (on_cuda and xformers_available()):
        raise RuntimeError("xformers attention needs a CUDA device and `pip install medley[cuda]`")
    if prefer in ("auto", "xformers") and on_cuda and xformers_available():
        pipe.enable_xformers_memory_efficient_attention()
        return "xformers"
    unet = getattr(pipe, "unet", None)
    if unet is not None and hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        unet.set_attn_processor(AttnProcessor2_0())
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        vae.set_attn_processor(AttnProcessor2_0())
    return "sdpa"
