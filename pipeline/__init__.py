"""Base models and image generation: load a base, pick the attention backend, generate()."""

from pipeline.base import BaseModelError, LoadedBase, load_base
from pipeline.generate import GenerationResult, generate
from pipeline.provenance import Provenance, read_parameters, save_png

__all__ = [
    "BaseModelError",
    "GenerationResult",
    "LoadedBase",
    "Provenance",
    "generate",
    "load_base",
    "read_parameters",
    "save_png",
]
