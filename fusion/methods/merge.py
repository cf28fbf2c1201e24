"""Weighted merge: what diffusers' ``set_adapters(names, weights)`` computes.

    W' = W + sum_i w_i (alpha_i / r_i) B_i A_i

Dynamic by default (the adapters stacked beside the frozen weight, two skinny products per
layer, instant swaps); ``static=True`` writes W' into the weights for zero per-step cost and
restores the saved originals on detach. This is the LoRA paper's own composition
(Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").
"""

from __future__ import annotations

from typing import Any

from fusion.methods.base import FusionMethod


class MergeMethod(FusionMethod):
    name = "merge"

    def __init__(self, static: bool = False) -> None:
        self.static = bool(static)

    def options(self) -> dict[str, Any]:
        return {"static": self.static}

    @property
    def batches(self) -> bool:
        return not self.static  # a merge written into the weights is the same for every row
