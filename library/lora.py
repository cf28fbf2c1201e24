"""The canonical adapter form every file format is read into (see ../shared/DESIGN.md).

One :class:`LoraAdapter` holds, per target module, an :class:`AdapterModule`: the update of
that module in the form its family defines. Target names are ``<component>.<module path>``
where the component is ``unet``, ``text_encoder`` or ``text_encoder_2`` and the module path
is the diffusers/transformers module name, e.g.
``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k``.

Families (the LyCORIS / ComfyUI ``weight_adapter`` idea): each module type says what it is
(``family``), gives its full update (:meth:`AdapterModule.delta`), and says how the fusion
engine can carry it: as exact low-rank factors that stack with other adapters' factors
(:meth:`AdapterModule.factors`, LoRA and conv LoRA: ``down`` [r, in] (conv [r, in, kh, kw]),
``up`` [out, r] (conv [out, r, 1, 1]), scale alpha / r), or as a dense term ``D x`` when no
small exact factorisation exists (:class:`DenseModule`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

COMPONENTS: tuple[str, ...] = ("unet", "text_encoder", "text_encoder_2")


class AdapterModule:
    """The update one adapter makes to one module of the base (a family's module type)."""

    family: ClassVar[str] = ""
    low_rank: ClassVar[bool] = False  # whether factors() gives the exact update as (down, up, scale)

    @property
    def out_features(self) -> int:
        raise NotImplementedError

    @property
    def in_features(self) -> int:
        raise NotImplementedError

    @property
    def kernel(self) -> tuple[int, int] | None:
        """The conv kernel (kh, kw) of the updated weight, None for a linear layer."""
        raise NotImplementedError

    @property
    def is_conv(self) -> bool:
        return self.kernel is not None

    @property
    def weight_shape(self) -> tuple[int, ...]:
        kernel = self.kernel
        return (self.out_features, self.in_features, *kernel) if kernel else (self.out_features, self.in_features)

    @property
    def rank(self) -> int:
        """The rank of the stacked form (low-rank families), or of the dense update's bound."""
        raise NotImplementedError

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The full update, with the module's own scale, shaped like the module's weight."""
        raise NotImplementedError

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """``(down, up, scale)`` with ``delta = scale * up @ down`` exactly, or None (a dense term)."""
        return None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by role name (for checks, fingerprints and sizes)."""
        raise NotImplementedError

    def as_lora(self) -> LoraModule | None:
        """The exact low-rank form as a :class:`LoraModule` (alpha = scale x rank), or None for a dense update."""
        factors = self.factors()
        if factors is None:
            return None
        down, up, scale = factors
        return LoraModule(down=down, up=up, alpha=scale * int(down.shape[0]))

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors().values())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


@dataclass(eq=False)
class LoraModule(AdapterModule):
    """The low-rank update of one module (LoRA, conv LoRA, LyCORIS LoCon): delta W = (alpha / r) * up @ down."""

    family: ClassVar[str] = "lora"
    low_rank: ClassVar[bool] = True

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
    def kernel(self) -> tuple[int, int] | None:
        return (int(self.down.shape[2]), int(self.down.shape[3])) if self.down.dim() == 4 else None

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

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        return self.down, self.up, self.scale

    def as_lora(self) -> LoraModule:
        return self

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"down": self.down, "up": self.up}


@dataclass(eq=False)
class DenseModule(AdapterModule):
    """An update given as a dense tensor (LyCORIS full/diff, or a LoHa/LoKr whose exact rank is too high
    to stack): ``delta W = scale * weight``. The fusion engine adds it as a dense term ``D x``."""

    low_rank: ClassVar[bool] = False

    weight: torch.Tensor
    scale: float = 1.0
    source_family: str = "full"  # the family it was read from (full, loha, lokr, ...)

    @property
    def family(self) -> str:  # type: ignore[override]
        return self.source_family

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> tuple[int, int] | None:
        return (int(self.weight.shape[2]), int(self.weight.shape[3])) if self.weight.dim() == 4 else None

    @property
    def rank(self) -> int:
        return min(self.out_features, self.in_features * math.prod(self.kernel or (1, 1)))

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.weight.to(dtype) * self.scale

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}


@dataclass
class LoraAdapter:
    """A whole adapter in canonical form, with the file's metadata.

    ``metadata`` is the safetensors header metadata as read (strings);
    ``source_format`` names the family it was read from
    (``kohya``, ``diffusers-legacy``, ``diffusers-peft``, ``peft``, ``medley``).
    """

    modules: dict[str, AdapterModule]
    metadata: dict[str, str] = field(default_factory=dict)
    source_format: str = "medley"

    def targets(self, component: str | None = None) -> list[str]:
        """Target names, optionally only those of one component (``unet``, ``text_encoder``...)."""
        if component is None:
            return sorted(self.modules)
        prefix = component + "."
        return sorted(name for name in self.modules if name.startswith(prefix))

    def component_modules(self, component: str) -> dict[str, AdapterModule]:
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
        return sum(m.num_parameters() for m in self.modules.values())

    def nbytes(self) -> int:
        """Bytes its tensors hold (what an adapter cache budgets)."""
        return sum(m.nbytes() for m in self.modules.values())

    @property
    def families(self) -> set[str]:
        return {m.family for m in self.modules.values()}


def split_target(name: str) -> tuple[str, str]:
    """``unet.down_blocks.0...`` -> (``unet``, ``down_blocks.0...``)."""
    component, _, path = name.partition(".")
    if component not in COMPONENTS or not path:
        raise ValueError(f"target {name!r} does not start with one of {', '.join(COMPONENTS)}")
    return component, path
