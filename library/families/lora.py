"""LoRA, conv LoRA and LyCORIS LoCon: ``lora_down.weight``, ``lora_up.weight``, optional ``lora_mid.weight``.

Without ``lora_mid`` a LoCon is a plain (conv) LoRA: a :class:`~library.lora.LoraModule`. With it (LoCon's
CP/Tucker decomposition of a kxk conv: down [r, in, 1, 1], mid [r, r, kh, kw], up [out, r, 1, 1]) the update
is ``up x_1 mid x_2 down``, which folds exactly into a conv LoRA whose down is kxk: down'[p, i, h, w] =
sum_q mid[p, q, h, w] down[q, i]. :class:`TuckerLoconModule` keeps the three tensors, gives that fold as its
exact factors (same rank r, so it always stacks) and its delta through ``lycoris.functional.locon``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from library.errors import AdapterFileError
from library.families.base import ALPHA, Family, ModulePlan, alpha_scale, as_float, shape_of
from library.layouts.model_layout import ModuleShape
from library.lora import AdapterModule, LoraModule

DOWN = "lora_down.weight"
UP = "lora_up.weight"
MID = "lora_mid.weight"


@dataclass(eq=False)
class TuckerLoconModule(AdapterModule):
    """A LyCORIS LoCon conv update with a Tucker core: delta = (alpha / r) * up x mid x down (exact factors)."""

    family: ClassVar[str] = "locon"
    low_rank: ClassVar[bool] = True

    down: torch.Tensor  # [r, in, 1, 1]
    mid: torch.Tensor  # [r, r, kh, kw]
    up: torch.Tensor  # [out, r, 1, 1]
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return alpha_scale(self.alpha, self.rank)

    @property
    def out_features(self) -> int:
        return int(self.up.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.down.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.mid.shape[2]), int(self.mid.shape[3])

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from lycoris.functional.locon import diff_weight

        down, up, mid = (as_float(t) for t in (self.down, self.up, self.mid))
        return diff_weight(down, up, mid, gamma=self.scale, backend="torch").to(dtype)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The Tucker fold (written here: no library gives it): down' = mid x_2 down, a kxk conv down."""
        down = torch.einsum("pqhw,qi->pihw", as_float(self.mid), as_float(self.down).flatten(1))
        return down, as_float(self.up), self.scale

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"down": self.down, "mid": self.mid, "up": self.up}


class LoraFamily(Family):
    name = "lora"
    label = "LoRA"
    parameters = frozenset({DOWN, UP, MID})
    markers = parameters

    def plan(self, entries: Mapping[str, object], where: str) -> ModulePlan:
        if DOWN not in entries or UP not in entries:
            core = "a LoCon Tucker core (lora_mid) but " if MID in entries else ""
            raise AdapterFileError(f"{where} has {core}no {'lora_down' if DOWN not in entries else 'lora_up'} weight")
        down, up = shape_of(entries, DOWN), shape_of(entries, UP)
        if MID in entries:
            return self._plan_tucker(down, shape_of(entries, MID), up, where)
        if len(down) != len(up) or len(down) not in (2, 4):
            raise AdapterFileError(f"{where} has down {list(down)} and up {list(up)}, which are not a linear or "
                                   "conv LoRA pair")
        if down[0] == 0 or down[1] == 0 or up[0] == 0:
            raise AdapterFileError(f"{where} has an empty weight")
        if down[0] != up[1]:
            raise AdapterFileError(f"{where} has mismatched ranks (down {down[0]}, up {up[1]})")
        if len(up) == 4 and tuple(up[2:]) != (1, 1):
            raise AdapterFileError(f"{where} has a {up[2]}x{up[3]} up conv; only 1x1 is supported")
        kernel = (down[2], down[3]) if len(down) == 4 else None
        return ModulePlan(ModuleShape(up[0], down[1], kernel), down[0])

    @staticmethod
    def _plan_tucker(down: tuple[int, ...], mid: tuple[int, ...], up: tuple[int, ...], where: str) -> ModulePlan:
        rank = down[0] if down else 0
        if (len(down), len(mid), len(up)) != (4, 4, 4) or tuple(down[2:]) != (1, 1) or tuple(up[2:]) != (1, 1):
            raise AdapterFileError(f"{where} has a LoCon Tucker core but down {list(down)}, mid {list(mid)}, up "
                                   f"{list(up)} are not [r, in, 1, 1], [r, r, kh, kw], [out, r, 1, 1]")
        if rank == 0 or down[1] == 0 or up[0] == 0:
            raise AdapterFileError(f"{where} has an empty weight")
        if (mid[0], mid[1], up[1]) != (rank, rank, rank):
            raise AdapterFileError(f"{where} has mismatched ranks (down {rank}, mid {mid[0]}x{mid[1]}, up {up[1]})")
        return ModulePlan(ModuleShape(up[0], down[1], (mid[2], mid[3])), rank)

    def load(self, tensors: Mapping[str, torch.Tensor], alpha: float | None,
             weight: ModuleShape | None) -> AdapterModule:
        down, up = tensors[DOWN], tensors[UP]
        value = float(down.shape[0]) if alpha is None or alpha == 0 else float(alpha)
        if MID in tensors:
            return TuckerLoconModule(down=down, mid=tensors[MID], up=up, alpha=value)
        return LoraModule(down=down, up=up, alpha=value)


LORA = LoraFamily()
__all__ = ["ALPHA", "DOWN", "LORA", "MID", "UP", "LoraFamily", "TuckerLoconModule"]
