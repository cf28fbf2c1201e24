"""PEFT LoRA keys: diffusers ``unet.<module>.lora_A.weight`` / ``lora_B`` and plain PEFT
``base_model.model.<module>.lora_A.weight``.

Alphas come from ``<module>.alpha`` tensors when present, else from the LoRA config:
the ``lora_adapter_metadata`` JSON in the header (diffusers; keys prefixed with the
component when a pipeline saved it) or an ``adapter_config.json`` beside a plain PEFT
file; ``alpha_pattern`` overrides ``lora_alpha`` per module, ``use_rslora`` scales by
alpha / sqrt(r). With no config at all alpha = rank (scale 1), PEFT's convention.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from library.errors import AdapterFileError, UnsupportedFamilyError
from library.formats.header import SafetensorsHeader
from library.formats.plan import PlannedModule
from library.sidecars import PEFT_CONFIG_SUFFIX as CONFIG_SUFFIX

DIFFUSERS_FORMAT = "diffusers-peft"
PLAIN_FORMAT = "peft"
METADATA_KEY = "lora_adapter_metadata"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
KEY = re.compile(
    r"^(base_model\.model\.)?(?:(unet|text_encoder|text_encoder_2)\.)?(.+)\.lora_(A|B)(?:\.([A-Za-z0-9_\-]+))?\.weight$"
)
_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def claims(key: str) -> bool:
    return KEY.match(key) is not None


def is_plain(keys: list[str]) -> bool:
    return any(key.startswith("base_model.model.") for key in keys)


@dataclass
class LoraConfigView:
    """The parts of a PEFT LoraConfig that set scales."""

    lora_alpha: float | None = None
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    use_rslora: bool = False

    def alpha_for(self, module_path: str, rank: int) -> float | None:
        alpha = self.lora_alpha
        for pattern, value in self.alpha_pattern.items():
            literal = pattern.removeprefix("^")
            if module_path == literal or module_path.endswith("." + literal):
                alpha = value
                break
        if alpha is None:
            return None
        return alpha * math.sqrt(rank) if self.use_rslora else alpha


def _config_view(file_name: str, raw: Mapping[str, Any]) -> LoraConfigView:
    if raw.get("use_dora"):
        raise UnsupportedFamilyError(f"{file_name}: is a DoRA adapter (use_dora in its config), which Medley does "
                                     "not read; only plain LoRA files are supported")
    try:
        alpha = raw.get("lora_alpha")
        pattern = raw.get("alpha_pattern") or {}
        return LoraConfigView(
            lora_alpha=None if alpha is None else float(alpha),
            alpha_pattern={str(k): float(v) for k, v in dict(pattern).items()},
            use_rslora=bool(raw.get("use_rslora", False)),
        )
    except (TypeError, ValueError):
        raise AdapterFileError(f"{file_name}: its LoRA config has a non-numeric lora_alpha or alpha_pattern") from None


def configs_from_metadata(file_name: str, metadata: Mapping[str, str]) -> dict[str | None, LoraConfigView]:
    """{component or None (applies to all): config} from the header's ``lora_adapter_metadata``."""
    raw_text = metadata.get(METADATA_KEY)
    if not raw_text:
        return {}
    try:
        raw = json.loads(raw_text)
    except (ValueError, RecursionError):
        raise AdapterFileError(f"{file_name}: {METADATA_KEY} in the header is not valid JSON") from None
    if not isinstance(raw, dict):
        raise AdapterFileError(f"{file_name}: {METADATA_KEY} in the header is not a JSON object")
    per_component: dict[str, dict[str, Any]] = {}
    unprefixed: dict[str, Any] = {}
    for key, value in raw.items():
        component, dot, rest = str(key).partition(".")
        if dot and component in _COMPONENTS:
            per_component.setdefault(component, {})[rest] = value
        else:
            unprefixed[key] = value
    views: dict[str | None, LoraConfigView] = {c: _config_view(file_name, v) for c, v in per_component.items()}
    if unprefixed:
        views[None] = _config_view(file_name, unprefixed)
    return views


def config_path_beside(path: Path) -> Path | None:
    """``<name>.adapter_config.json`` beside ``<name>.safetensors`` (how Medley keeps an imported copy's
    config), or a PEFT folder's ``adapter_config.json`` beside ``adapter_model.safetensors``."""
    candidates = [path.with_name(path.name.removesuffix(path.suffix) + CONFIG_SUFFIX)]
    if path.name == "adapter_model.safetensors":
        candidates.append(path.with_name("adapter_config.json"))
    return next((c for c in candidates if c.is_file() and not c.is_symlink()), None)


def config_beside(path: Path) -> dict[str | None, LoraConfigView]:
    """The LoRA config found by :func:`config_path_beside`, if any."""
    config_path = config_path_beside(path)
    if config_path is None:
        return {}
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterFileError(f"{path.name}: {config_path.name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AdapterFileError(f"{path.name}: {config_path.name} beside it is not valid JSON") from None
    if not isinstance(raw, dict):
        raise AdapterFileError(f"{path.name}: {config_path.name} beside it is not a JSON object")
    return {None: _config_view(path.name, raw)}


def plan(file_name: str, header: SafetensorsHeader,
         configs: Mapping[str | None, LoraConfigView]) -> tuple[list[PlannedModule], list[str]]:
    groups: dict[tuple[str | None, str], dict[str, str]] = {}
    prefixes: dict[tuple[str | None, str], str] = {}
    alpha_keys = {key for key in header.tensors if key.endswith(".alpha")}
    for key in header.tensors:
        if key in alpha_keys:
            continue
        match = KEY.match(key)
        if match is None:
            raise AdapterFileError(f"{file_name}: key {key[:120]!r} is not a PEFT LoRA key")
        wrapper, component, path, part, _adapter = match.groups()
        groups.setdefault((component, path), {})[part] = key
        prefixes[(component, path)] = (wrapper or "") + (component + "." if component else "") + path
    used_alphas: set[str] = set()
    modules: list[PlannedModule] = []
    for (component, path), parts in sorted(groups.items(), key=lambda item: (item[0][0] or "", item[0][1])):
        if "A" not in parts or "B" not in parts:
            raise AdapterFileError(f"{file_name}: module {path} has no lora_{'A' if 'A' not in parts else 'B'} weight")
        down_shape = header.tensors[parts["A"]].shape
        candidate = prefixes[(component, path)] + ".alpha"
        alpha_key = candidate if candidate in alpha_keys else None
        alpha: float | None = None
        if alpha_key is not None:
            used_alphas.add(alpha_key)
        else:
            config = configs.get(component) or configs.get(None)
            alpha = config.alpha_for(path, down_shape[0]) if config is not None and down_shape else None
        modules.append(PlannedModule(
            name=path, component=component, flat=False, down_key=parts["A"], up_key=parts["B"],
            alpha_key=alpha_key, down_shape=down_shape, up_shape=header.tensors[parts["B"]].shape, alpha=alpha,
        ))
    stray = sorted(alpha_keys - used_alphas)
    if stray:
        raise AdapterFileError(f"{file_name}: alpha {stray[0][:120]!r} belongs to no LoRA module")
    return modules, []
