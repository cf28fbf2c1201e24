"""From a file's keys, grouped by module, to checked :class:`PlannedModule` entries (any family)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from library.errors import AdapterFileError
from library.families import plan_module
from library.families.base import ALPHA
from library.families.ia3 import ON_INPUT
from library.formats.header import FLOAT_DTYPES, SafetensorsHeader
from library.formats.plan import PlannedModule

INT_DTYPES = frozenset({"I64", "I32", "I16"})
# the largest weight a module may update: 2**28 numbers (1 GiB in float32), ~7x the largest layer of the
# bases Medley knows; a LoKr of two small factors can declare a kron of terabytes, refused from its header
MAX_WEIGHT_NUMBERS = 2**28


@dataclass(frozen=True)
class ModuleName:
    """How a file names one module: ``label`` is how messages name it (the key before the parameter)."""

    component: str | None
    name: str
    flat: bool
    label: str


AlphaOf = Callable[[ModuleName, int], float | None]  # a config's alpha for a module of that rank


def _check_dtypes(file_name: str, header: SafetensorsHeader, keys: Mapping[str, str]) -> None:
    for parameter, key in keys.items():
        entry = header.tensors[key]
        if parameter == ALPHA:
            if math.prod(entry.shape) != 1:
                raise AdapterFileError(f"{file_name}: alpha {key!r} is not a single number")
        elif parameter == ON_INPUT:
            if entry.dtype not in INT_DTYPES and entry.dtype not in FLOAT_DTYPES:
                raise AdapterFileError(f"{file_name}: tensor {key!r} is {entry.dtype}, not a number")
        elif entry.dtype not in FLOAT_DTYPES:
            raise AdapterFileError(f"{file_name}: tensor {key!r} is {entry.dtype}; LoRA weights must be floating point")


def plan_groups(file_name: str, header: SafetensorsHeader, groups: Mapping[ModuleName, Mapping[str, str]],
                alpha_of: AlphaOf | None = None) -> list[PlannedModule]:
    """One planned module per group ({parameter: tensor key}), checked by its family, in name order."""
    modules: list[PlannedModule] = []
    for name, keys in sorted(groups.items(), key=lambda item: (item[0].component or "", item[0].name)):
        entries = {parameter: header.tensors[key] for parameter, key in keys.items()}
        family, plan = plan_module(entries, f"{file_name}: module {name.label}")
        if plan.weight is not None:
            numbers = plan.weight.out_features * plan.weight.in_features * math.prod(plan.weight.kernel or (1,))
            if numbers > MAX_WEIGHT_NUMBERS:
                raise AdapterFileError(f"{file_name}: module {name.label} updates a weight of {numbers} numbers, "
                                       "larger than any layer of a text-to-image model")
        _check_dtypes(file_name, header, keys)
        alpha = None
        if ALPHA not in keys and alpha_of is not None and plan.rank:
            alpha = alpha_of(name, plan.rank)
            if alpha is not None and not math.isfinite(alpha):
                raise AdapterFileError(f"{file_name}: module {name.label} has a non-finite alpha in its config")
        modules.append(PlannedModule(
            name=name.name, component=name.component, flat=name.flat, family=family, keys=dict(keys),
            weight=plan.weight, rank=plan.rank, alpha=alpha, flat_in=plan.flat_in,
        ))
    return modules
