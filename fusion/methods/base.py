"""The interface every fusion method implements.

A method decides the gates ``g_i(layer, t)`` that scale adapter i at a layer and step, on
top of the static scale (alpha / r x weight x block weight) the session folds in at attach.
Hooks, all optional:

* :meth:`prepare` - before anything is touched: check roles, precompute per-layer scores,
  or rewrite the adapters (Break-for-Make builds one composed adapter).
* :meth:`static_gain` - an extra per-module multiplier fixed at attach (gated: per block).
* :meth:`step_gates` - per-adapter multipliers for the current step (switch, gated curves).
* :meth:`layer_gates` - per-layer, per-step multipliers (K-LoRA), when ``layer_dependent``.
* :meth:`splits` / :meth:`combine` - layers that need each adapter's output separately
  (orthogonal dropout, the trained gate) and how to add them to the base output.
* :meth:`wrap_forward` - replace the UNet's forward for the session (composite).
* :meth:`uncond_gains` - each adapter's gain in the unconditional half of classifier-free
  guidance (adapter guidance, :mod:`fusion.guidance`; gated).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from fusion.context import StepContext
from fusion.spec import AdapterSpec

if TYPE_CHECKING:
    from fusion.layer import FusedLayer
    from fusion.session import FusionSession


class FusionMethod:
    """Base class: a plain weighted sum (every gate 1)."""

    name: ClassVar[str] = ""
    time_dependent: ClassVar[bool] = False  # step_gates varies with the step
    layer_dependent: ClassVar[bool] = False  # layer_gates must be asked per layer and step
    static: bool = False  # write the update into the weights instead of wrapping layers

    @property
    def batches(self) -> bool:
        """Whether rows of one UNet batch may compose different adapter sets (per-row coefficients, see
        :mod:`fusion.rows`): true when the gates depend only on the adapter and the step, never on which other
        adapters a request holds, and the layers need no per-adapter outputs."""
        return False

    def options(self) -> dict[str, Any]:
        """The method's settings, for provenance."""
        return {}

    def prepare(self, specs: list[AdapterSpec], components: Mapping[str, nn.Module]) -> list[AdapterSpec]:
        """Check and precompute before any weight is touched; return the adapters to stack."""
        return specs

    def static_gain(self, index: int, spec: AdapterSpec, component: str, path: str) -> float:
        return 1.0

    def step_gates(self, context: StepContext, count: int) -> list[float] | None:
        """Per-adapter multipliers for the current step (None: all 1)."""
        return None

    def layer_gates(self, layer: FusedLayer, context: StepContext, step: list[float] | None) -> list[float] | None:
        """Per-slot multipliers of ``layer`` for the current step (only when ``layer_dependent``)."""
        return None if step is None else [step[i] for i in layer.adapters]

    def splits(self, component: str, path: str) -> bool:
        """Whether ``combine`` needs each adapter's output at this layer."""
        return False

    def combine(
        self, layer: FusedLayer, base_out: torch.Tensor, outputs: list[torch.Tensor], context: StepContext
    ) -> torch.Tensor:
        total = base_out
        for output in outputs:
            total = total + output
        return total

    def wrap_forward(self, forward: Callable[..., Any], session: FusionSession) -> Callable[..., Any] | None:
        return None

    def uncond_gains(self) -> list[float] | None:
        """Per adapter (as :meth:`prepare` returned them), its gain in the unconditional half (None: all 1)."""
        return None


def roles_index(specs: Sequence[AdapterSpec], role: str) -> list[int]:
    return [i for i, spec in enumerate(specs) if spec.role == role]


def one_content_one_style(specs: Sequence[AdapterSpec], method: str) -> tuple[int, int]:
    """The indices of the single content and the single style adapter, or a clear error."""
    content, style = roles_index(specs, "content"), roles_index(specs, "style")
    if len(content) != 1 or len(style) != 1:
        raise ValueError(
            f"{method} composes one content and one style adapter (role='content' / role='style'); "
            f"got {len(content)} content and {len(style)} style"
        )
    return content[0], style[0]
