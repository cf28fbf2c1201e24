"""Per-block LoRA weights, in diffusers' ``set_adapters`` dict form, resolved per module.

Accepted forms (each value a float multiplier)::

    0.7                                            every UNet module
    {"down": 0.5, "mid": 1.0, "up": 1.2}           per UNet region
    {"down": {"block_1": 0.5}, "up": {"block_1": [0, 1]}}   per block, or per transformer layer
    {"unet": {...one of the above...}, "text_encoder": 0.5}  per component

A scalar for a region (``down``/``mid``/``up``) or a block (``block_i``) covers every module
inside it; a list gives one value per transformer layer (``attentions.j``) of the block.
Regions, blocks and components left out weigh 1.0, as do modules outside the three regions
(``conv_in``, ``time_embedding``...). This matches diffusers for attention LoRAs; unlike
diffusers, a region/block scalar also covers that block's resnets (conv LoRAs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

BlockWeights = float | Mapping[str, object]

_REGIONS = {"down": "down_blocks", "mid": "mid_block", "up": "up_blocks"}
_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"block weight {where} must be a number, got {value!r}")
    return float(value)


def component_part(weights: BlockWeights | None, component: str) -> BlockWeights | None:
    """The part of ``weights`` that concerns ``component`` (a bare UNet dict concerns the UNet)."""
    if weights is None:
        return None
    if isinstance(weights, Mapping) and any(key in _COMPONENTS for key in weights):
        unknown = set(weights) - set(_COMPONENTS)
        if unknown:
            raise ValueError(f"block weights mix component keys with {sorted(unknown)}")
        return weights.get(component)  # type: ignore[return-value]
    return weights if component == "unet" else None


def validate(weights: BlockWeights | None, unet: nn.Module | None = None) -> None:
    """Raise ValueError for malformed weights or blocks the UNet does not have."""
    if weights is None:
        return
    for component in _COMPONENTS:
        part = component_part(weights, component)
        if part is None:
            continue
        if component != "unet":
            _number(part, component)
            continue
        if not isinstance(part, Mapping):
            _number(part, "unet")
            continue
        for region, value in part.items():
            if region not in _REGIONS:
                raise ValueError(f"unknown UNet region {region!r} in block weights; use down, mid or up")
            if region == "mid":
                if isinstance(value, Sequence) and not isinstance(value, str):
                    if len(value) != 1:
                        raise ValueError("mid takes one weight")
                    value = value[0]
                _number(value, "mid")
                continue
            if not isinstance(value, Mapping):
                _number(value, region)
                continue
            blocks = getattr(unet, _REGIONS[region], None) if unet is not None else None
            for block, block_value in value.items():
                if not (isinstance(block, str) and block.startswith("block_") and block[6:].isdigit()):
                    raise ValueError(f"bad block key {block!r} in {region}; write block_0, block_1, ...")
                index = int(block[6:])
                if blocks is not None and index >= len(blocks):
                    raise ValueError(f"{region}.{block}: this UNet has {len(blocks)} {region} blocks")
                if isinstance(block_value, Sequence) and not isinstance(block_value, str):
                    values = [_number(v, f"{region}.{block}") for v in block_value]
                    attentions = getattr(blocks[index], "attentions", None) if blocks is not None else None
                    if blocks is not None and attentions is None:
                        raise ValueError(f"{region}.{block} has no transformer layers for a per-layer list")
                    if attentions is not None and len(values) not in (1, len(attentions)):
                        raise ValueError(
                            f"{region}.{block} has {len(attentions)} transformer layers, got {len(values)} weights"
                        )
                else:
                    _number(block_value, f"{region}.{block}")


def multiplier(weights: BlockWeights | None, component: str, path: str) -> float:
    """The multiplier of module ``path`` (a path inside ``component``) under ``weights``."""
    part = component_part(weights, component)
    if part is None:
        return 1.0
    if not isinstance(part, Mapping):
        return float(part)  # type: ignore[arg-type]
    parts = path.split(".")
    region = next((key for key, prefix in _REGIONS.items() if parts[0] == prefix), None)
    if region is None or region not in part:
        return 1.0
    value = part[region]
    if region == "mid":
        return float(value[0] if isinstance(value, Sequence) else value)  # type: ignore[arg-type,index]
    if not isinstance(value, Mapping):
        return float(value)  # type: ignore[arg-type]
    if len(parts) < 2:
        return 1.0
    block_value = value.get(f"block_{parts[1]}")
    if block_value is None:
        return 1.0
    if not isinstance(block_value, Sequence) or isinstance(block_value, str):
        return float(block_value)  # type: ignore[arg-type]
    values = list(block_value)
    if len(parts) >= 4 and parts[2] == "attentions" and parts[3].isdigit():
        layer = int(parts[3])
        return float(values[0] if len(values) == 1 else values[layer])
    return 1.0
