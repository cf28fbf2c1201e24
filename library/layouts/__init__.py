"""Module names and weight shapes of the known bases, built from configs without weights."""

from library.layouts.model_layout import ModelLayout, ModuleShape, known_layouts, layout_from_components

__all__ = ["ModelLayout", "ModuleShape", "known_layouts", "layout_from_components"]
