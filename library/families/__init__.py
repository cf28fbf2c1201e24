"""Adapter families, one module each (LoRA/LoCon, LoHa, LoKr, full, norm, (IA)^3, DoRA, embeddings).

A module of a file is a set of parameters (``lora_down.weight``, ``hada_w1_a``, ``alpha``...); the family
whose markers it holds plans it from the header and loads it. A DoRA magnitude (``dora_scale``,
``lora_magnitude_vector``) on top of any direction family wraps the loaded module in a
:class:`~library.families.dora.DoraModule`.

How the fusion engine carries each module type (every update includes the module's own scale; the
engine multiplies by the adapter's weight / gate g):

* ``module.factors()`` is not None -> stack ``(down, up, scale)``: :class:`~library.lora.LoraModule`,
  :class:`~library.families.lora.TuckerLoconModule` (always; its down is a kxk conv), and
  :class:`~library.families.loha.LohaModule` / :class:`~library.families.lokr.LokrModule` when their exact
  rank r1 * r2 passes :func:`~library.families.base.stacks_exactly` (2 * rank <= min(out, in * kh * kw);
  ``low_rank`` is then True for that instance). Conv factors: down [R, in, kh, kw], up [out, R, 1, 1].
* ``factors()`` is None and the module has no ``needs_base_weight`` -> a dense term ``D = module.delta()``
  shaped like the weight (LoHa / LoKr above the bound, :class:`~library.families.full.FullModule`, a
  :class:`~library.lora.DenseModule`); a FullModule's ``bias_delta()`` (or None) is added to the output.
* ``needs_base_weight`` (:class:`~library.families.on_base.OnBaseModule`: DoRA, (IA)^3) -> ``delta()``
  raises; call ``delta_on(W)`` with the layer's ORIGINAL weight once when wrapping the layer, carry the
  result as a dense term scaled linearly by g (W + g D), and add ``bias_delta_on(b)`` (None for DoRA).
* :class:`~library.families.norm.NormModule` (``is_norm``) updates a LayerNorm / GroupNorm, not a linear
  or conv: add ``delta()`` to its weight and ``bias_delta()`` to its bias.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

from library.errors import AdapterFileError
from library.families.base import ALPHA, DORA_SCALE, MAGNITUDE, SHARED, Family, ModulePlan, shape_of
from library.families.dora import DoraModule, magnitude_axis
from library.families.full import FULL
from library.families.ia3 import IA3
from library.families.loha import LOHA
from library.families.lokr import LOKR
from library.families.lora import LORA
from library.families.norm import NORM
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule

FAMILIES: tuple[Family, ...] = (LORA, LOHA, LOKR, FULL, NORM, IA3)
BY_NAME: dict[str, Family] = {family.name: family for family in FAMILIES}
PARAMETERS: frozenset[str] = frozenset().union(*(family.parameters for family in FAMILIES), SHARED)
DIRECTION_FAMILIES = frozenset({"lora", "loha", "lokr"})  # what a DoRA magnitude may sit on


def family_for(parameters: Collection[str], where: str) -> Family:
    """The one family whose markers the module's parameters hold; raises for none, several or strays."""
    own = set(parameters) - SHARED
    matches = [family for family in FAMILIES if own & family.markers]
    if not matches:
        magnitude = magnitude_parameter(parameters)
        if magnitude is not None:
            raise AdapterFileError(f"{where} has a DoRA magnitude ({magnitude}) but no direction weights")
        raise AdapterFileError(f"{where} holds only {', '.join(sorted(parameters))}, no adapter weights")
    if len(matches) > 1:
        raise AdapterFileError(f"{where} mixes {matches[0].label} and {matches[1].label} weights")
    family = matches[0]
    stray = sorted(own - family.parameters)
    if stray:
        raise AdapterFileError(f"{where} holds {family.label} weights and an unexpected {stray[0]!r}")
    return family


def magnitude_parameter(parameters: Collection[str]) -> str | None:
    found = [name for name in (DORA_SCALE, MAGNITUDE) if name in parameters]
    return found[0] if found else None


def plan_module(entries: Mapping[str, object], where: str) -> tuple[str, ModulePlan]:
    """(family name, plan) of one module; ``entries``: parameter -> header entry."""
    family = family_for(entries, where)
    plan = family.plan(entries, where)
    magnitude = magnitude_parameter(entries)
    if magnitude is not None:
        if family.name not in DIRECTION_FAMILIES:
            raise AdapterFileError(f"{where} has a DoRA magnitude on {family.label} weights")
        if DORA_SCALE in entries and MAGNITUDE in entries:
            raise AdapterFileError(f"{where} has both a dora_scale and a lora_magnitude_vector")
        magnitude_axis(magnitude, shape_of(entries, magnitude), plan.weight, plan.flat_in, where)
    return family.name, plan


def load_module(family: str, tensors: Mapping[str, torch.Tensor], alpha: float | None,
                weight: ModuleShape | None) -> AdapterModule:
    """The canonical module of one planned module from its loaded tensors (``alpha``: resolved)."""
    module = BY_NAME[family].load(tensors, alpha, weight)
    magnitude = magnitude_parameter(tensors)
    if magnitude is None:
        return module
    axis = magnitude_axis(magnitude, tuple(tensors[magnitude].shape), weight, False, "module")
    return DoraModule(direction=module, magnitude=tensors[magnitude], axis=axis)


__all__ = ["ALPHA", "BY_NAME", "FAMILIES", "PARAMETERS", "DoraModule", "Family", "ModulePlan", "family_for",
           "load_module", "plan_module"]
