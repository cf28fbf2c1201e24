"""Original Stable Diffusion (LDM/sgm) UNet module names for diffusers module paths.

kohya trains SDXL on the original UNet, so SDXL LoRAs name modules
``input_blocks.4.1.transformer_blocks.0.attn1.to_q`` where diffusers says
``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``. The block
numbering depends on the config (layers per block, which blocks attend), so the
map is derived from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_FIXED = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.(.*))?$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)(?:\.(.*))?$")


def _resnet_tail(tail: str | None) -> str | None:
    if tail is None:
        return None
    head, _, rest = tail.partition(".")
    mapped = _RESNET_PARTS.get(head)
    if mapped is None:
        return None
    return mapped + ("." + rest if rest else "")


def _join(prefix: str, tail: str | None) -> str:
    return prefix if tail is None else f"{prefix}.{tail}"


def ldm_unet_name(path: str, config: Mapping[str, Any]) -> str | None:
    """The LDM name of the diffusers UNet module ``path``, or None when it has none."""
    if path in _FIXED:
        return _FIXED[path]
    per_block = int(config.get("layers_per_block", 2))
    up_types: Sequence[str] = config["up_block_types"]
    mid = _MID.match(path)
    if mid:
        kind, index, tail = mid.group(1), int(mid.group(2)), mid.group(3)
        if kind == "attentions":
            return _join("middle_block.1", tail)
        resnet_tail = _resnet_tail(tail)
        return None if resnet_tail is None else f"middle_block.{0 if index == 0 else 2}.{resnet_tail}"
    block = _BLOCK.match(path)
    if not block:
        return None
    side, kind, tail = block.group(1), block.group(3), block.group(5)
    number, index = int(block.group(2)), int(block.group(4))
    if side == "down_blocks":
        first = 1 + number * (per_block + 1)
        if kind == "resnets":
            resnet_tail = _resnet_tail(tail)
            return None if resnet_tail is None else f"input_blocks.{first + index}.0.{resnet_tail}"
        if kind == "attentions":
            return _join(f"input_blocks.{first + index}.1", tail)
        return f"input_blocks.{first + per_block}.0.op" if tail == "conv" else None
    first = number * (per_block + 1)
    if kind == "resnets":
        resnet_tail = _resnet_tail(tail)
        return None if resnet_tail is None else f"output_blocks.{first + index}.0.{resnet_tail}"
    if kind == "attentions":
        return _join(f"output_blocks.{first + index}.1", tail)
    attends = "CrossAttn" in up_types[number]
    return f"output_blocks.{first + per_block}.{2 if attends else 1}.conv" if tail == "conv" else None
