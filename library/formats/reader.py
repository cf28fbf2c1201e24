"""Read any supported LoRA file into the canonical :class:`~library.lora.LoraAdapter`.

``plan_file`` reads only the header (fast, for the catalogue); ``read_adapter``
then loads the tensors the plan names through ``safetensors.safe_open``, which is
only reached once the header has passed every check in library/formats/header.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from library.base_names import hints_from_metadata, unique
from library.errors import AdapterFileError
from library.formats import diffusers_legacy, kohya, peft
from library.formats.families import refuse_unsupported_families
from library.formats.header import FLOAT_DTYPES, SafetensorsHeader, read_header
from library.formats.names import resolve_targets
from library.formats.plan import AdapterPlan, PlannedModule, check_module_shapes
from library.layouts.model_layout import ModelLayout, known_layouts
from library.lora import LoraAdapter, LoraModule


def detect_format(file_name: str, keys: Sequence[str]) -> str:
    """``kohya``, ``diffusers-legacy``, ``diffusers-peft`` or ``peft``; raises for anything else."""
    refuse_unsupported_families(file_name, list(keys))
    formats: set[str] = set()
    unknown: list[str] = []
    for key in keys:
        if kohya.claims(key):
            formats.add(kohya.FORMAT)
        elif key.endswith(".alpha"):
            continue
        elif peft.claims(key):
            formats.add(peft.PLAIN_FORMAT if key.startswith("base_model.model.") else peft.DIFFUSERS_FORMAT)
        elif diffusers_legacy.claims(key):
            formats.add(diffusers_legacy.FORMAT)
        else:
            unknown.append(key)
    if unknown:
        raise AdapterFileError(f"{file_name}: {len(unknown)} tensor(s) match no LoRA format Medley reads, "
                               f"e.g. {unknown[0][:120]!r}")
    if len(formats) > 1:
        raise AdapterFileError(f"{file_name}: mixes LoRA formats ({', '.join(sorted(formats))})")
    if not formats:
        raise AdapterFileError(f"{file_name}: holds no LoRA weights")
    return formats.pop()


def _check_dtypes(file_name: str, header: SafetensorsHeader, modules: Sequence[PlannedModule]) -> None:
    for module in modules:
        for key in (module.down_key, module.up_key):
            if header.tensors[key].dtype not in FLOAT_DTYPES:
                raise AdapterFileError(f"{file_name}: tensor {key!r} is {header.tensors[key].dtype}; LoRA weights "
                                       "must be floating point")
        if module.alpha_key is not None and math.prod(header.tensors[module.alpha_key].shape) != 1:
            raise AdapterFileError(f"{file_name}: alpha {module.alpha_key!r} is not a single number")
        if module.alpha is not None and not math.isfinite(module.alpha):
            raise AdapterFileError(f"{file_name}: module {module.name} has a non-finite alpha in its config")


def plan_header(file_name: str, header: SafetensorsHeader, layouts: Sequence[ModelLayout],
                configs: Mapping[str | None, peft.LoraConfigView] | None = None) -> AdapterPlan:
    """The plan of a parsed header (``configs``: a PEFT config found beside the file)."""
    keys = list(header.tensors)
    file_format = detect_format(file_name, keys)
    if file_format == kohya.FORMAT:
        modules, hints = kohya.plan(file_name, header)
    elif file_format == diffusers_legacy.FORMAT:
        modules, hints = diffusers_legacy.plan(file_name, header)
    else:
        header_configs = peft.configs_from_metadata(file_name, header.metadata)
        modules, hints = peft.plan(file_name, header, header_configs or (configs or {}))
    for module in modules:
        check_module_shapes(file_name, module)
    _check_dtypes(file_name, header, modules)
    hints = unique([*hints_from_metadata(header.metadata), *hints])
    targets, layout_name = resolve_targets(file_name, modules, layouts, hints)
    return AdapterPlan(format=file_format, modules=targets, metadata=dict(header.metadata), hints=hints,
                       layout=layout_name)


def plan_file(path: Path, layouts: Sequence[ModelLayout] | None = None) -> AdapterPlan:
    """Read and check the header of ``path``; raise :class:`AdapterFileError` for anything unreadable."""
    path = Path(path)
    header = read_header(path)
    configs = peft.config_beside(path)
    return plan_header(path.name, header, known_layouts() if layouts is None else layouts, configs)


def _alpha(module: PlannedModule, stored: float | None) -> float:
    value = module.alpha if module.alpha is not None else stored
    if value is None or value == 0:  # kohya: alpha 0 or absent means alpha = rank (scale 1)
        return float(module.rank)
    return float(value)


def read_adapter(path: Path, layouts: Sequence[ModelLayout] | None = None) -> LoraAdapter:
    """The canonical adapter of the LoRA file ``path`` (safetensors only; pickles are refused)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    plan = plan_file(path, layouts)
    modules: dict[str, LoraModule] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for target, module in plan.modules.items():
                down = handle.get_tensor(module.down_key)
                up = handle.get_tensor(module.up_key)
                stored = None
                if module.alpha_key is not None:
                    stored = float(handle.get_tensor(module.alpha_key).double().reshape(-1)[0].item())
                modules[target] = LoraModule(down=down, up=up, alpha=_alpha(module, stored))
    except (OSError, RuntimeError, ValueError, SafetensorError) as error:
        raise AdapterFileError(f"{path.name}: cannot read tensors ({str(error)[:100]})") from None
    return LoraAdapter(modules=modules, metadata=plan.metadata, source_format=plan.format)
