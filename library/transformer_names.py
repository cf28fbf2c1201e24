"""Which transformer (DiT) base an adapter's module names belong to: FLUX or Stable Diffusion 3.

Medley applies adapters to UNet bases; adapters for FLUX and SD3 are still catalogued (their base is told
from their names, widths and metadata) so they can be searched, and library.compat refuses them on an SD
base with a reason naming the base. Names they use:

* FLUX: BFL / kohya ``double_blocks.N.img_attn.qkv``, ``single_blocks.N.linear1``
  (``lora_unet_double_blocks_0_img_attn_qkv``); diffusers ``single_transformer_blocks.N.attn.to_q`` beside
  ``transformer_blocks.N.attn.add_q_proj``; hidden width 3072.
* SD3 / SD3.5: kohya ``joint_blocks.N.x_block.attn.qkv`` / ``context_block``; diffusers
  ``transformer_blocks.N.attn.add_q_proj`` (a joint attention, also written fused as ``to_added_qkv``)
  with no single blocks; hidden width 1536 (medium) or 2432 (large).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

TRANSFORMER_BASES: tuple[str, ...] = ("flux", "sd3")
FLUX_WIDTH = 3072
_FLUX = re.compile(r"(?:^|[._])(?:double_blocks|single_blocks|single_transformer_blocks|img_attn|txt_attn|"
                   r"guidance_in|guidance_embedder)(?:[._]|$)")
_SD3 = re.compile(r"(?:^|[._])(?:joint_blocks|x_block|context_block)(?:[._]|$)")
_JOINT = re.compile(r"^(?:transformer[._])?transformer_blocks[._]\d+[._].*(?:add_[qkv]_proj|to_add_out|to_added_qkv|"
                    r"ff_context|norm1_context)")
_ROOT_BLOCKS = re.compile(r"^(?:transformer[._])?(?:single_)?transformer_blocks[._]\d+[._]")


def transformer_base(names: Iterable[str], widths: Sequence[int] = (), hints: Sequence[str] = ()) -> str | None:
    """``flux``, ``sd3`` or None for module names (dotted or kohya-flattened, without ``lora_unet_``).

    ``widths``: in-features of the root transformer blocks' modules (3072 is FLUX); ``hints``: bases the
    metadata names, which decide between the two when the names alone do not."""
    flux = sd3 = joint = False
    for name in names:
        flux = flux or _FLUX.search(name) is not None
        sd3 = sd3 or _SD3.search(name) is not None
        joint = joint or _JOINT.search(name) is not None
    if flux:
        return "flux"
    if sd3:
        return "sd3"
    if not joint:
        return None
    hinted = next((hint for hint in hints if hint in TRANSFORMER_BASES), None)
    if hinted is not None:
        return hinted
    return "flux" if FLUX_WIDTH in widths else "sd3"


def at_root(name: str) -> bool:
    """A module of a root-level transformer block (``transformer_blocks.N...``), whose width tells the base."""
    return _ROOT_BLOCKS.match(name) is not None
