"""Base models and image generation: load a base, generate(), and the core render service (Studio)."""

from library.picks import Pick
from pipeline.base import BaseModelError, LoadedBase, load_base
from pipeline.generate import GenerationResult, generate
from pipeline.outputs import save_outcome
from pipeline.provenance import Provenance, read_parameters, save_png
from pipeline.studio import RenderError, RenderOutcome, RenderRequest, Studio

__all__ = [
    "BaseModelError",
    "GenerationResult",
    "LoadedBase",
    "Pick",
    "Provenance",
    "RenderError",
    "RenderOutcome",
    "RenderRequest",
    "Studio",
    "generate",
    "load_base",
    "read_parameters",
    "save_outcome",
    "save_png",
]
