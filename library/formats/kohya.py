"""kohya-ss / A1111 LoRA keys: ``lora_unet_<flat module>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``.

Module names are flattened (dots became underscores); text encoders are
``lora_te_`` (SD1/SD2) or ``lora_te1_``/``lora_te2_`` (SDXL). Names are resolved
against real module paths later (library/formats/names.py).
"""

from __future__ import annotations

import re

from library.errors import AdapterFileError
from library.formats.header import SafetensorsHeader
from library.formats.plan import PlannedModule

FORMAT = "kohya"
KEY = re.compile(r"^(lora_unet|lora_te|lora_te1|lora_te2)_([A-Za-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|alpha)$")
COMPONENT_OF_PREFIX = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder",
                       "lora_te2": "text_encoder_2"}


def claims(key: str) -> bool:
    return KEY.match(key) is not None


def plan(file_name: str, header: SafetensorsHeader) -> tuple[list[PlannedModule], list[str]]:
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for key in header.tensors:
        match = KEY.match(key)
        if match is None:
            raise AdapterFileError(f"{file_name}: key {key[:120]!r} is not a kohya LoRA key")
        prefix, name, part = match.groups()
        groups.setdefault((prefix, name), {})[part] = key
    hints = ["sdxl"] if any(prefix in ("lora_te1", "lora_te2") for prefix, _ in groups) else []
    modules: list[PlannedModule] = []
    for (prefix, name), parts in sorted(groups.items()):
        down_key, up_key = parts.get("lora_down.weight"), parts.get("lora_up.weight")
        if down_key is None or up_key is None:
            missing = "lora_down" if down_key is None else "lora_up"
            raise AdapterFileError(f"{file_name}: module {prefix}_{name} has no {missing} weight")
        modules.append(PlannedModule(
            name=name,
            component=COMPONENT_OF_PREFIX[prefix],
            flat=True,
            down_key=down_key,
            up_key=up_key,
            alpha_key=parts.get("alpha"),
            down_shape=header.tensors[down_key].shape,
            up_shape=header.tensors[up_key].shape,
        ))
    return modules, hints


def module_prefix(component: str, flat_name: str, has_second_encoder: bool) -> str:
    """The kohya module key (before ``.lora_down.weight``) of a flattened module name."""
    if component == "unet":
        return f"lora_unet_{flat_name}"
    if component == "text_encoder":
        return f"lora_te1_{flat_name}" if has_second_encoder else f"lora_te_{flat_name}"
    if component == "text_encoder_2":
        return f"lora_te2_{flat_name}"
    raise ValueError(f"unknown component {component!r}")
