"""K-LoRA (Ouyang et al. 2025, "K-LoRA: Unlocking Training-Free Fusion of Any Subject and
Style LoRAs"). At each attention projection (to_q, to_k, to_v, to_out.0) that both a content
and a style adapter touch, apply only one of them, chosen per forward by comparing their
top-K weight magnitudes:

    S_c = sum of the K largest |dW_c| entries,  S_s likewise,  K = r_c * r_s
    apply dW_c  if  S_c / gamma > S_s * S(t),  else dW_s
    S(t) = (alpha * p + beta) mod alpha,  alpha = 1.5, beta = 0.85 * alpha,  p = fraction done

gamma balances the two adapters' overall magnitudes: the mean over layers of
sum|dW_c| / sum|dW_s|, recomputed after dropping layers whose ratio exceeds 3x the mean.
The scores do not depend on t, so they are computed once at attach; per step only the
choice flips. Other layers (and the text encoder) take the weighted sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fusion.context import StepContext
from fusion.layer import FusedLayer
from fusion.methods.base import FusionMethod, one_content_one_style
from fusion.spec import AdapterSpec
from library.lora import AdapterModule

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def magnitudes(module: AdapterModule, k: int, base_weight: torch.Tensor | None = None) -> tuple[float, float]:
    """(sum of the ``k`` largest |entries|, sum of all |entries|) of the dense update (alpha / r in); a DoRA or
    (IA)^3 update is taken on ``base_weight``, the layer's weight."""
    if getattr(module, "needs_base_weight", False):
        assert base_weight is not None
        delta = module.delta_on(base_weight.detach().float(), torch.float32)  # type: ignore[attr-defined]
    else:
        delta = module.delta(torch.float32)
    values = delta.abs().flatten()
    return float(values.topk(min(k, values.numel())).values.sum()), float(values.sum())


def balance(ratios: list[float], outlier: float = 3.0) -> float:
    """Mean ratio, recomputed without layers above ``outlier`` x the mean."""
    if not ratios:
        return 1.0
    mean = sum(ratios) / len(ratios)
    kept = [r for r in ratios if r <= outlier * mean]
    return sum(kept) / len(kept) if kept else mean


def style_factor(fraction: float, alpha: float = 1.5, beta: float | None = None) -> float:
    """S(t) = (alpha * p + beta) mod alpha."""
    beta = 0.85 * alpha if beta is None else beta
    return (alpha * fraction + beta) % alpha


class KLoraMethod(FusionMethod):
    name = "klora"
    time_dependent = True
    layer_dependent = True

    def __init__(self, alpha: float = 1.5, beta: float | None = None, outlier: float = 3.0) -> None:
        self.alpha = float(alpha)
        self.beta = 0.85 * self.alpha if beta is None else float(beta)
        self.outlier = float(outlier)
        self.content = self.style = -1
        self.gamma = 1.0
        self.scores: dict[str, tuple[float, float]] = {}

    def options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}

    def prepare(self, specs: list[AdapterSpec], components: Mapping[str, nn.Module]) -> list[AdapterSpec]:
        content, style = one_content_one_style(specs, "klora")
        content_modules, style_modules = specs[content].adapter.modules, specs[style].adapter.modules
        scores: dict[str, tuple[float, float]] = {}
        ratios: list[float] = []
        for target in sorted(set(content_modules) & set(style_modules)):
            if not target.startswith("unet.") or not target.endswith(tuple("." + p for p in ATTENTION_PROJECTIONS)):
                continue
            c, s = content_modules[target], style_modules[target]
            component, _, path = target.partition(".")
            weight = components[component].get_submodule(path).weight if component in components else None
            (content_top, content_total), (style_top, style_total) = (magnitudes(m, c.rank * s.rank, weight)
                                                                      for m in (c, s))
            scores[target] = (content_top, style_top)
            if style_total > 0:
                ratios.append(content_total / style_total)
        self.content, self.style = content, style
        self.scores, self.gamma = scores, balance(ratios, self.outlier)
        return specs

    def choose_content(self, target: str, fraction: float) -> bool | None:
        """True: content acts at ``target``; False: style; None: not a K-LoRA layer."""
        if target not in self.scores:
            return None
        content_score, style_score = self.scores[target]
        return content_score / self.gamma > style_score * style_factor(fraction, self.alpha, self.beta)

    def layer_gates(self, layer: FusedLayer, context: StepContext, step: list[float] | None) -> list[float] | None:
        gates = [1.0 if step is None else step[i] for i in layer.adapters]
        choice = self.choose_content(layer.target, context.fraction)
        if choice is not None:
            drop = self.style if choice else self.content
            gates = [0.0 if adapter == drop else g for adapter, g in zip(layer.adapters, gates, strict=True)]
        return gates
