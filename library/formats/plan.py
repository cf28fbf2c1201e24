"""What a file holds, read from its header alone: one :class:`PlannedModule` per LoRA module.

A plan names the tensors of each module and their shapes without loading any
data, so the catalogue can describe thousands of files quickly; ``read_adapter``
then loads exactly the tensors a plan names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from library.errors import AdapterFileError
from library.layouts.model_layout import ModuleShape


@dataclass(frozen=True)
class PlannedModule:
    """One LoRA module as a file stores it.

    ``name`` is the module name as written (dotted, or kohya-flattened when ``flat``),
    ``component`` is None when the file does not say (plain PEFT); ``target`` is the
    canonical ``<component>.<module path>`` once names are resolved.
    """

    name: str
    component: str | None
    flat: bool
    down_key: str
    up_key: str
    alpha_key: str | None
    down_shape: tuple[int, ...]
    up_shape: tuple[int, ...]
    alpha: float | None = None
    target: str = ""

    @property
    def rank(self) -> int:
        return self.down_shape[0]

    @property
    def shape(self) -> ModuleShape:
        kernel = (self.down_shape[2], self.down_shape[3]) if len(self.down_shape) == 4 else None
        return ModuleShape(self.up_shape[0], self.down_shape[1], kernel)


@dataclass
class AdapterPlan:
    """A whole file: its format, its modules by canonical target, header metadata and base hints."""

    format: str
    modules: dict[str, PlannedModule]
    metadata: dict[str, str] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)
    layout: str | None = None

    @property
    def rank(self) -> int:
        return max((m.rank for m in self.modules.values()), default=0)

    def shapes(self) -> dict[str, ModuleShape]:
        return {target: module.shape for target, module in self.modules.items()}


def check_module_shapes(file_name: str, module: PlannedModule) -> None:
    """down [r, in] with up [out, r], or conv down [r, in, kh, kw] with up [out, r, 1, 1]."""
    down, up = module.down_shape, module.up_shape
    label = module.name
    if len(down) != len(up) or len(down) not in (2, 4):
        raise AdapterFileError(f"{file_name}: module {label} has down {list(down)} and up {list(up)}, "
                               "which are not a linear or conv LoRA pair")
    if down[0] == 0 or down[1] == 0 or up[0] == 0:
        raise AdapterFileError(f"{file_name}: module {label} has an empty weight")
    if down[0] != up[1]:
        raise AdapterFileError(f"{file_name}: module {label} has mismatched ranks (down {down[0]}, up {up[1]})")
    if len(up) == 4 and tuple(up[2:]) != (1, 1):
        raise AdapterFileError(f"{file_name}: module {label} has a {up[2]}x{up[3]} up conv; only 1x1 is supported")
