"""The canonical LoRA form every file format is read into (see ../shared/DESIGN.md).

One :class:`LoraAdapter` holds, per target module, a :class:`LoraModule` with
``down`` [r, in] (conv: [r, in, kh, kw]), ``up`` [out, r] (conv: [out, r, 1, 1])
and ``alpha`` (scale = alpha / r). Target names are ``<component>.<module path>``
where the component is ``unet``, ``text_encoder`` or ``text_encoder_2`` and the
module path is the diffusers/transformers module name, e.g.
``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

COMPONENTS: tuple[str, ...] = ("unet", "text_encoder", "text_encoder_2")


@dataclass
class LoraModule:
    """The low-rank update of one module: delta W = (alpha / r) * up @ down."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    @property
    def is_conv(self) -> bool:
        return self.down.dim() == 4

    @property
    def in_features(self) -> int:
        return int(self.down.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.up.shape[0])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense update (alpha / r) * up @ down, shaped like the module's weight."""
        down = self.down.to(dtype)
        up = self.up.to(dtype)
        if self.is_conv:
            if down.shape[2:] == (1, 1) and up.shape[2:] == (1, 1):
                return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], down.shape[1], 1, 1) * self.scale
            # a kxk down conv followed by a 1x1 up conv: fold up into down's output channels
            return torch.einsum("or,rihw->oihw", up.flatten(1), down) * self.scale
        return (up @ down) * self.scale


@dataclass
class LoraAdapter:
    """A whole adapter in canonical form, with the file's metadata.

    ``metadata`` is the safetensors header metadata as read (strings);
    ``source_format`` names the family it was read from
    (``kohya``, ``diffusers-legacy``, ``diffusers-peft``, ``peft``, ``medley``).
    """

    modules: dict[str, LoraModule]
    metadata: dict[str, str] = field(default_factory=dict)
    source_format: str = "medley"

    def targets(self, component: str | None = None) -> list[str]:
        """Target names, optionally only those of one component (``unet``, ``text_encoder``...)."""
        if component is None:
            return sorted(self.modules)
        prefix = component + "."
        return sorted(name for name in self.modules if name.startswith(prefix))

    def component_modules(self, component: str) -> dict[str, LoraModule]:
        """{module path within the component: LoraModule}."""
        prefix = component + "."
        return {name[len(prefix) :]: module for name, module in self.modules.items() if name.startswith(prefix)}

    @property
    def ranks(self) -> set[int]:
        return {module.rank for module in self.modules.values()}

    @property
    def rank(self) -> int:
        """The largest rank (a file may mix ranks)."""
        return max(self.ranks, default=0)

    def num_parameters(self) -> int:
        return sum(m.down.numel() + m.up.numel() for m in self.modules.values())


def split_target(name: str) -> tuple[str, str]:
    """``unet.down_blocks.0...`` -> (``unet``, ``down_blocks.0...``)."""
    component, _, path = name.partition(".")
    if component not in COMPONENTS or not path:
        raise ValueError(f"target {name!r} does not start with one of {', '.join(COMPONENTS)}")
    return component, path
