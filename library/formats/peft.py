"""PEFT keys: diffusers ``unet.<module>.lora_A.weight`` / ``lora_B`` and plain PEFT
``base_model.model.<module>.lora_A.weight``, with PEFT's other families in the same spelling (DoRA
``lora_magnitude_vector``, LoHa ``hada_w1_a``..., LoKr ``lokr_w1``..., (IA)^3 ``ia3_l``).

Alphas come from ``<module>.alpha`` tensors when present, else from the adapter's config: the
``lora_adapter_metadata`` JSON in the header (diffusers; keys prefixed with the component when a pipeline
saved it) or an ``adapter_config.json`` beside a plain PEFT file; ``alpha_pattern`` overrides
``lora_alpha`` (LoHa/LoKr: ``alpha``) per module, ``use_rslora`` scales by alpha / sqrt(r). With no config
at all alpha = rank (scale 1), PEFT's convention. (PEFT scales a LoKr made of two full matrices by
alpha / r as well; LyCORIS by 1, which is what is read here.)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from library.errors import AdapterFileError
from library.families.base import MAGNITUDE
from library.families.lora import DOWN, UP
from library.formats.grouping import ModuleName, plan_groups
from library.formats.header import SafetensorsHeader
from library.formats.plan import PlannedModule
from library.sidecars import PEFT_CONFIG_SUFFIX as CONFIG_SUFFIX

DIFFUSERS_FORMAT = "diffusers-peft"
PLAIN_FORMAT = "peft"
METADATA_KEY = "lora_adapter_metadata"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_NAME = r"(?:\.[A-Za-z0-9_\-]+)?"  # an adapter name PEFT may leave in a key ("default")
_PARAMETER = (rf"lora_(?P<ab>A|B){_NAME}\.weight|lora_magnitude_vector{_NAME}(?:\.weight)?|alpha|ia3_l|"
              r"lora_(?:down|up|mid)\.weight|hada_(?:w[12]_[ab]|t[12])|lokr_(?:w[12](?:_[ab])?|t2)|diff|diff_b|"
              r"w_norm|b_norm")
KEY = re.compile(rf"^(base_model\.model\.)?(?:(unet|text_encoder|text_encoder_2|text_encoder_3|transformer)\.)?"
                 rf"(.+)\.(?P<parameter>{_PARAMETER})$")
_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "text_encoder_3", "transformer")


def split(key: str) -> tuple[bool, str | None, str, str] | None:
    """(plain PEFT, component, module path, parameter in LyCORIS / kohya spelling) of a PEFT key, or None."""
    match = KEY.match(key)
    if match is None:
        return None
    parameter = match.group("parameter")
    if match.group("ab") is not None:
        parameter = DOWN if match.group("ab") == "A" else UP
    elif parameter.startswith(MAGNITUDE):
        parameter = MAGNITUDE
    return match.group(1) is not None, match.group(2), match.group(3), parameter


def claims(key: str) -> bool:
    return split(key) is not None


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
    try:
        alpha = raw.get("lora_alpha", raw.get("alpha"))
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


def raw_config_beside(path: Path) -> dict[str, Any] | None:
    """The JSON object of the config found by :func:`config_path_beside`, or None when there is none."""
    config_path = config_path_beside(path)
    if config_path is None:
        return None
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterFileError(f"{path.name}: {config_path.name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AdapterFileError(f"{path.name}: {config_path.name} beside it is not valid JSON") from None
    if not isinstance(raw, dict):
        raise AdapterFileError(f"{path.name}: {config_path.name} beside it is not a JSON object")
    return raw


def config_views(file_name: str, raw: Mapping[str, Any] | None) -> dict[str | None, LoraConfigView]:
    """The scale-setting view of a config read beside a file (it applies to every module)."""
    return {} if raw is None else {None: _config_view(file_name, raw)}


def config_beside(path: Path) -> dict[str | None, LoraConfigView]:
    """The LoRA config found by :func:`config_path_beside`, if any."""
    return config_views(path.name, raw_config_beside(path))


def plan(file_name: str, header: SafetensorsHeader,
         configs: Mapping[str | None, LoraConfigView]) -> tuple[list[PlannedModule], list[str]]:
    groups: dict[ModuleName, dict[str, str]] = {}
    for key in header.tensors:
        parts = split(key)
        if parts is None:
            raise AdapterFileError(f"{file_name}: key {key[:120]!r} is not a PEFT LoRA key")
        plain, component, path, parameter = parts
        label = ("base_model.model." if plain else "") + (component + "." if component else "") + path
        groups.setdefault(ModuleName(component, path, False, label), {})[parameter] = key

    def alpha_of(module: ModuleName, rank: int) -> float | None:
        config = configs.get(module.component) or configs.get(None)
        return config.alpha_for(module.name, rank) if config is not None else None

    return plan_groups(file_name, header, groups, alpha_of), []
