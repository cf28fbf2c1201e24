"""kohya-ss / A1111 / LyCORIS keys: ``lora_unet_<flat module>.<parameter>``.

Parameters are those of every family (``lora_down.weight``, ``lora_up.weight``, ``alpha``,
``lora_mid.weight``, ``hada_w1_a``, ``lokr_w1``, ``diff``, ``w_norm``, ``dora_scale``...; see
library/families). Module names are flattened (dots became underscores); text encoders are ``lora_te_``
(SD1/SD2) or ``lora_te1_``/``lora_te2_`` (SDXL; ``lora_te3_``: SD3/FLUX's T5); LyCORIS' own wrapper writes
``lycoris_``. Names are resolved against real module paths later (library/formats/names.py).
"""

from __future__ import annotations

import re

from library.errors import AdapterFileError
from library.families import PARAMETERS
from library.formats.grouping import ModuleName, plan_groups
from library.formats.header import SafetensorsHeader
from library.formats.plan import PlannedModule

FORMAT = "kohya"
KEY = re.compile(r"^(lora_unet|lora_te|lora_te1|lora_te2|lora_te3|lycoris)_([A-Za-z0-9_]+)\.(.+)$")
COMPONENT_OF_PREFIX = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder",
                       "lora_te2": "text_encoder_2", "lora_te3": "text_encoder_3", "lycoris": "unet"}


def split(key: str) -> tuple[str, str, str] | None:
    """(prefix, flat module name, parameter) of a kohya key, or None."""
    match = KEY.match(key)
    if match is None or match.group(3) not in PARAMETERS:
        return None
    prefix, name, parameter = match.groups()
    return prefix, name, parameter


def claims(key: str) -> bool:
    return split(key) is not None


def plan(file_name: str, header: SafetensorsHeader) -> tuple[list[PlannedModule], list[str]]:
    groups: dict[ModuleName, dict[str, str]] = {}
    for key in header.tensors:
        parts = split(key)
        if parts is None:
            raise AdapterFileError(f"{file_name}: key {key[:120]!r} is not a kohya LoRA key")
        prefix, name, parameter = parts
        module = ModuleName(COMPONENT_OF_PREFIX[prefix], name, True, f"{prefix}_{name}")
        groups.setdefault(module, {})[parameter] = key
    hints = ["sdxl"] if any(m.label.startswith(("lora_te1_", "lora_te2_")) for m in groups) and not any(
        m.label.startswith("lora_te3_") for m in groups) else []
    return plan_groups(file_name, header, groups), hints


def module_prefix(component: str, flat_name: str, has_second_encoder: bool) -> str:
    """The kohya module key (before ``.lora_down.weight``) of a flattened module name."""
    if component == "unet":
        return f"lora_unet_{flat_name}"
    if component == "text_encoder":
        return f"lora_te1_{flat_name}" if has_second_encoder else f"lora_te_{flat_name}"
    if component == "text_encoder_2":
        return f"lora_te2_{flat_name}"
    raise ValueError(f"unknown component {component!r}")
