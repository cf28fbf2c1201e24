"""Updates that are a function of the base weight they land on (DoRA's weight norm, (IA)^3's rescaling).

Such a module cannot say its delta on its own: :meth:`OnBaseModule.delta` raises, and the fusion engine
calls :meth:`OnBaseModule.delta_on` with the base layer's ORIGINAL weight (before any adapter is merged)
when it wraps the layer, then carries the result as a dense term ``D x`` whose gate / strength g scales it
linearly (W + g * D, which is how A1111 and ComfyUI apply a DoRA at a strength). ``bias_delta_on``
gives the update of the layer's bias, when the family changes it ((IA)^3 on outputs), else None.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from library.lora import AdapterModule


class NeedsBaseWeightError(ValueError):
    """delta() of a module whose update depends on the base weight (use delta_on(base_weight))."""


class OnBaseModule(AdapterModule):
    """An update computed from the base layer's weight at apply time (a dense term)."""

    low_rank: ClassVar[bool] = False
    needs_base_weight: ClassVar[bool] = True

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NeedsBaseWeightError(f"a {self.family} update depends on the base weight: call "
                                   "delta_on(base_weight) with the layer's original weight")

    def delta_on(self, base_weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The update of ``base_weight`` (the layer's original weight) at strength 1, in ``dtype``
        (default: the base weight's)."""
        raise NotImplementedError

    def bias_delta_on(self, base_bias: torch.Tensor | None) -> torch.Tensor | None:
        """The update of the layer's bias at strength 1, or None when the bias is left alone."""
        return None

    def check_base(self, base_weight: torch.Tensor) -> None:
        if tuple(base_weight.shape) != self.weight_shape:
            raise ValueError(f"a {self.family} update of a {list(self.weight_shape)} weight cannot be applied to a "
                             f"{list(base_weight.shape)} one")
