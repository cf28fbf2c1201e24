"""Write an adapter as a kohya-compatible LoRA file, loadable by A1111, ComfyUI and diffusers.

Keys are ``lora_unet_<flat name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
(``lora_te_``, or ``lora_te1_``/``lora_te2_`` with two text encoders); names follow
what those tools expect (original-SD UNet names for SDXL, as kohya writes them).
The header carries kohya ``ss_*`` and ``modelspec.*`` metadata plus ``medley.kind`` and
``medley.triggers``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import torch

from library.base_names import WRITTEN_NAMES
from library.formats.kohya import module_prefix
from library.layouts.model_layout import ModelLayout, built_in_layout, flatten
from library.lora import LoraAdapter, LoraModule, split_target
from library.metadata import AdapterInfo, alias

NETWORK_MODULE = "networks.lora"
MODELSPEC_VERSION = "1.0.0"
_DROPPED_KEYS = ("lora_adapter_metadata",)


def _alpha_tensor(alpha: float) -> torch.Tensor:
    single = torch.tensor(alpha, dtype=torch.float32)
    return single if float(single.item()) == alpha else torch.tensor(alpha, dtype=torch.float64)


def _most_common(values: list[float]) -> float:
    return Counter(values).most_common(1)[0][0] if values else 0.0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def header_metadata(adapter: LoraAdapter, info: AdapterInfo, base: str) -> dict[str, str]:
    """The ``ss_*``, ``modelspec.*`` and ``medley.*`` keys for ``adapter`` (on top of its own metadata)."""
    _check_low_rank(adapter)
    architecture, version, implementation, resolution = WRITTEN_NAMES.get(base, WRITTEN_NAMES["unknown"])
    name = alias(info.name or info.title or "adapter")
    alphas = [float(m.alpha) for m in adapter.modules.values()]
    ranks = [float(m.rank) for m in adapter.modules.values()]
    metadata = {key: value for key, value in adapter.metadata.items() if key not in _DROPPED_KEYS}
    metadata.update({
        "format": "pt",
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": _number(_most_common(ranks)),
        "ss_network_alpha": _number(_most_common(alphas)),
        "ss_output_name": name,
        "ss_base_model_version": version,
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": architecture,
        "modelspec.implementation": implementation,
        "modelspec.title": info.title or name,
        "modelspec.date": dt.date.today().isoformat(),
        "medley.kind": info.kind or "other",
        "medley.triggers": json.dumps(info.triggers),
    })
    conv = [m for m in adapter.modules.values() if m.is_conv and tuple(m.down.shape[2:]) != (1, 1)]
    if conv:
        metadata["ss_network_args"] = json.dumps({"conv_dim": _number(_most_common([float(m.rank) for m in conv])),
                                                  "conv_alpha": _number(_most_common([float(m.alpha) for m in conv]))})
    optional = {
        "modelspec.resolution": resolution,
        "modelspec.trigger_phrase": ", ".join(info.triggers),
        "modelspec.description": info.description,
        "modelspec.tags": ", ".join(info.tags),
        "ss_tag_frequency": json.dumps(info.tag_frequency) if info.tag_frequency else "",
        "medley.preferred_weight": _number(info.preferred_weight) if info.preferred_weight is not None else "",
    }
    metadata.update({key: value for key, value in optional.items() if value})
    return metadata


def _check_low_rank(adapter: LoraAdapter) -> None:
    for target, module in sorted(adapter.modules.items()):
        if not isinstance(module, LoraModule) or module.family != "lora":
            raise ValueError(f"{target} is a {module.family} module; only LoRA modules are written as kohya files")


def kohya_state_dict(adapter: LoraAdapter, layout: ModelLayout | None) -> dict[str, torch.Tensor]:
    _check_low_rank(adapter)
    has_second_encoder = any(name.startswith("text_encoder_2.") for name in adapter.modules)
    tensors: dict[str, torch.Tensor] = {}
    for target, module in sorted(adapter.modules.items()):
        component, path = split_target(target)
        name = layout.conventional_name(component, path) if layout is not None else path
        prefix = module_prefix(component, flatten(name), has_second_encoder)
        if f"{prefix}.alpha" in tensors:
            raise ValueError(f"two targets flatten to the same kohya name {prefix}")
        tensors[f"{prefix}.lora_down.weight"] = module.down.detach().contiguous().cpu()
        tensors[f"{prefix}.lora_up.weight"] = module.up.detach().contiguous().cpu()
        tensors[f"{prefix}.alpha"] = _alpha_tensor(float(module.alpha))
    return tensors


def write_kohya(adapter: LoraAdapter, path: Path, info: AdapterInfo | None = None, base: str | None = None) -> Path:
    """Write ``adapter`` to ``path`` (atomically: a temp file renamed into place) and return the path.

    ``base`` defaults to the base detected from the adapter's shapes and metadata.
    """
    from safetensors.torch import save

    from library.compat import detect_adapter_base
    from library.files import write_atomic  # library.files imports the formats package

    path = Path(path)
    info = info or AdapterInfo(name=path.stem)
    base = base or detect_adapter_base(adapter, info.base_hints)
    layout = built_in_layout(base) if base in WRITTEN_NAMES and base != "unknown" else None
    tensors = kohya_state_dict(adapter, layout)
    metadata = header_metadata(adapter, info, base)
    write_atomic(path, save(tensors, metadata=metadata))
    return path
