"""Fusion methods, one per file over :class:`~fusion.methods.base.FusionMethod`."""

from __future__ import annotations

from typing import Any

from fusion.methods.b4m import B4MMethod
from fusion.methods.base import FusionMethod
from fusion.methods.composite import CompositeMethod
from fusion.methods.gated import GatedMethod
from fusion.methods.klora import KLoraMethod
from fusion.methods.merge import MergeMethod
from fusion.methods.orthogonal import OrthogonalMethod
from fusion.methods.switch import SwitchMethod

FUSION_METHODS: dict[str, type[FusionMethod]] = {
    cls.name: cls
    for cls in (
        MergeMethod,
        SwitchMethod,
        CompositeMethod,
        OrthogonalMethod,
        KLoraMethod,
        GatedMethod,
        B4MMethod,
    )
}


def make_method(method: str | FusionMethod, **options: Any) -> FusionMethod:
    """A method instance from its name and options (or an instance, then no options)."""
    if isinstance(method, FusionMethod):
        if options:
            raise TypeError("options go to the method's constructor; pass a name, not an instance, with options")
        return method
    cls = FUSION_METHODS.get(method)
    if cls is None:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    try:
        return cls(**options)
    except TypeError as error:
        raise TypeError(f"{method}: {error}") from error


__all__ = ["FUSION_METHODS", "FusionMethod", "make_method"]
