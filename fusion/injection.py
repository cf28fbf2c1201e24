"""Putting fused layers into a model and taking them out again, and static merges.

Wrappers are created once per module and kept in a cache keyed by the model, so a later
session (a swap to other adapters) reuses them: attaching is a ``setattr`` on the parent
and loading a few stacked tensors. Detaching puts the original module object back.
A static merge adds the update to the weight in place and restores a saved copy of the
original values (never subtracts), so the base comes back bit for bit.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from fusion.layer import FusedLayer, weight_of

_ATTACHED: weakref.WeakKeyDictionary[nn.Module, object] = weakref.WeakKeyDictionary()


@dataclass
class Site:
    """Where a wrapper goes: ``parent.<child>`` (the parent held weakly: it may be the model)."""

    wrapper: FusedLayer
    parent: weakref.ref[nn.Module]
    child: str


_SITES: weakref.WeakKeyDictionary[nn.Module, dict[str, Site]] = weakref.WeakKeyDictionary()


def claim(model: nn.Module, owner: object) -> None:
    """Mark ``model`` as used by ``owner``; refuse if another live session holds it."""
    holder = _ATTACHED.get(model)
    if holder is not None and holder is not owner:
        raise RuntimeError("another fusion session is attached to this model; leave it (detach) first")
    _ATTACHED[model] = owner


def release(model: nn.Module, owner: object) -> None:
    if _ATTACHED.get(model) is owner:
        del _ATTACHED[model]


def site_for(model: nn.Module, path: str) -> Site:
    """The cached site of ``model``'s module ``path``, with its wrapper (created on first use)."""
    cache = _SITES.setdefault(model, {})
    site = cache.get(path)
    if site is not None:
        parent = site.parent()
        if parent is not None:
            current = parent._modules.get(site.child)
            if current is site.wrapper or current is site.wrapper.base:
                return site
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    current = parent._modules[child]
    assert current is not None
    wrapper = current if isinstance(current, FusedLayer) else FusedLayer(current)
    site = Site(wrapper, weakref.ref(parent), child)
    cache[path] = site
    return site


def install(site: Site) -> None:
    parent = site.parent()
    if parent is not None and parent._modules.get(site.child) is not site.wrapper:
        parent._modules[site.child] = site.wrapper


def uninstall(site: Site) -> None:
    """Put the original module back and empty the wrapper (kept in the cache for reuse)."""
    parent = site.parent()
    if parent is not None and parent._modules.get(site.child) is site.wrapper:
        parent._modules[site.child] = site.wrapper.base
    site.wrapper.clear()


def merge_weight(module: nn.Module, delta: torch.Tensor) -> torch.Tensor:
    """Add ``delta`` to the module's weight in place; return a copy of the original values."""
    weight = weight_of(module)
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
    return saved


def restore_weight(module: nn.Module, saved: torch.Tensor) -> None:
    with torch.no_grad():
        weight_of(module).copy_(saved)
