"""LoRA Composite (Zhong et al. 2024, "Multi-LoRA Composition for Image Generation").

At every step the UNet runs once per adapter with only that adapter active, and the
guidance is built from the averaged predictions:

    eps = mean_i eps_u^i + s * (mean_i eps_c^i - mean_i eps_u^i)

Classifier-free guidance is linear, so averaging the whole (unconditional + conditional)
UNet output batch over the adapters and letting the pipeline apply guidance is the same.
Implemented by replacing the UNet's forward for the session (restored on detach). Costs k
UNet passes per step. Text-encoder weights stay merged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from fusion.methods.base import FusionMethod

if TYPE_CHECKING:
    from fusion.session import FusionSession


def average_outputs(outputs: list[Any]) -> Any:
    """Average UNet outputs of any form: a tensor, a tuple (return_dict=False), or an output object."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(outputs).mean(dim=0)
    if isinstance(first, tuple):
        return (average_outputs([o[0] for o in outputs]), *first[1:])
    sample = torch.stack([o.sample for o in outputs]).mean(dim=0)
    return type(first)(sample=sample)


class CompositeMethod(FusionMethod):
    name = "composite"
    time_dependent = True

    def wrap_forward(self, forward: Callable[..., Any], session: FusionSession) -> Callable[..., Any]:
        def composite_forward(*args: Any, **kwargs: Any) -> Any:
            indices = session.unet_adapters()
            if len(indices) <= 1:
                return forward(*args, **kwargs)
            results = []
            try:
                for index in indices:
                    session.set_solo(index)
                    results.append(forward(*args, **kwargs))
            finally:
                session.set_solo(None)
            return average_outputs(results)

        return composite_forward
