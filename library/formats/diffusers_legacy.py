"""Older diffusers LoRA keys (attention processors and LoRACompatible layers).

``unet.<attn>.processor.to_q_lora.down.weight`` (the attention processor's
``to_q``/``to_k``/``to_v``/``to_out.0``; in a text encoder ``q_proj``... ``out_proj``),
``<module>.lora.down.weight`` and ``<module>.lora_linear_layer.down.weight``.
No alphas unless the file has ``.alpha`` keys: scale 1 (alpha = rank).
"""

from __future__ import annotations

import re

from library.errors import AdapterFileError
from library.families.base import ALPHA
from library.families.lora import DOWN, UP
from library.formats.grouping import ModuleName, plan_groups
from library.formats.header import SafetensorsHeader
from library.formats.plan import PlannedModule

FORMAT = "diffusers-legacy"
_COMPONENT = r"(?:(unet|text_encoder|text_encoder_2)\.)?"
PROCESSOR_KEY = re.compile(rf"^{_COMPONENT}(.+?)\.(?:processor\.)?(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
LAYER_KEY = re.compile(rf"^{_COMPONENT}(.+)\.(lora|lora_linear_layer)\.(down|up)\.weight$")
_UNET_PROJECTIONS = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_TEXT_PROJECTIONS = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def claims(key: str) -> bool:
    return PROCESSOR_KEY.match(key) is not None or LAYER_KEY.match(key) is not None


def _parse(key: str) -> tuple[str | None, str, str, str]:
    """(component, module path, group key before .down/.up, down|up)."""
    processor = PROCESSOR_KEY.match(key)
    if processor is not None:
        component, path, projection, part = processor.groups()
        text = (component or "").startswith("text_encoder") or path.endswith("self_attn")
        module = f"{path}.{(_TEXT_PROJECTIONS if text else _UNET_PROJECTIONS)[projection]}"
        return component, module, key.rsplit(".", 2)[0], part
    layer = LAYER_KEY.match(key)
    if layer is None:
        raise ValueError(key)
    component, path, _, part = layer.groups()
    return component, path, key.rsplit(".", 2)[0], part


def plan(file_name: str, header: SafetensorsHeader) -> tuple[list[PlannedModule], list[str]]:
    groups: dict[ModuleName, dict[str, str]] = {}
    group_keys: dict[ModuleName, str] = {}
    alpha_keys = {key for key in header.tensors if key.endswith(".alpha")}
    for key in header.tensors:
        if key in alpha_keys:
            continue
        if not claims(key):
            raise AdapterFileError(f"{file_name}: key {key[:120]!r} is not a diffusers LoRA key")
        component, module, group, part = _parse(key)
        name = ModuleName(component, module, False, f"{component + '.' if component else ''}{module}")
        groups.setdefault(name, {})[DOWN if part == "down" else UP] = key
        group_keys[name] = group
    used_alphas: set[str] = set()
    for name, parts in groups.items():
        candidates = [f"{group_keys[name]}.alpha", f"{name.label}.alpha"]
        alpha_key = next((c for c in candidates if c in alpha_keys), None)
        if alpha_key is not None:
            parts[ALPHA] = alpha_key
            used_alphas.add(alpha_key)
    stray = sorted(alpha_keys - used_alphas)
    if stray:
        raise AdapterFileError(f"{file_name}: alpha {stray[0][:120]!r} belongs to no LoRA module")
    return plan_groups(file_name, header, groups), []
