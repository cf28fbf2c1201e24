"""Base models and image generation: load a base, generate(), and the core render service (Studio).

The names below load on first use (PEP 562): ``import pipeline.attention`` or ``pipeline.provenance``
(``medley doctor``, reading a PNG's parameters) must not pay for diffusers and transformers, which
``pipeline.base`` imports (about three seconds on a 2-core machine).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Pick": "library.picks",
    "BaseModelError": "pipeline.base",
    "LoadedBase": "pipeline.base",
    "load_base": "pipeline.base",
    "GenerationResult": "pipeline.generate",
    "generate": "pipeline.generate",
    "save_outcome": "pipeline.outputs",
    "Provenance": "pipeline.provenance",
    "read_parameters": "pipeline.provenance",
    "save_png": "pipeline.provenance",
    "RenderError": "pipeline.studio",
    "RenderOutcome": "pipeline.studio",
    "RenderRequest": "pipeline.studio",
    "Studio": "pipeline.studio",
}

if TYPE_CHECKING:
    from library.picks import Pick
    from pipeline.base import BaseModelError, LoadedBase, load_base
    from pipeline.generate import GenerationResult, generate
    from pipeline.outputs import save_outcome
    from pipeline.provenance import Provenance, read_parameters, save_png
    from pipeline.studio import RenderError, RenderOutcome, RenderRequest, Studio


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """Importing the submodule ``pipeline.generate`` sets the package attribute ``generate`` to that module;
    the package exports the function of that name, as it did when it imported everything eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
