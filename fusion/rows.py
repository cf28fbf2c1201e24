"""Heterogeneous batches: rows of one UNet batch composing different adapter sets in one pass.

The S-LoRA / Punica idea applied to diffusion. The adapters of every row are stacked once, as the
union of the rows' sets (each distinct adapter, role, schedule and block weights once, at weight 1),
and each row carries its own coefficient per stacked adapter: its weight for that adapter, 0 when
the row does not use it. A fused layer then computes, for row r,

    y_r = W x_r + up ((down x_r) * c[r, rank slots]) + sum_j c[r, j] D_j x_r

so k adapters over B rows still cost two skinny products (and one product per dense term). The
text encoder and the UNet get their own coefficients (A1111's ``te=``/``unet=`` weights); a call
whose batch holds ``n * B`` rows (the UNet's ``[uncond; cond]`` halves) maps row r to request
``r % B``. Per-step gates and adapter guidance act per stacked adapter, as in a plain session.

Only methods whose gates depend on an adapter and the step alone can batch
(:attr:`fusion.FusionMethod.batches`: the dynamic merge and the gated schedule); the others group
requests by adapter set (see :func:`pipeline.generate`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fusion.spec import AdapterSpec


@dataclass
class RowPlan:
    """The stacked adapters of a heterogeneous batch and each row's coefficients on them."""

    entries: list[AdapterSpec]  # the union, each at weight 1
    unet: torch.Tensor  # [rows, entries]: each row's weight of each adapter in the UNet
    text: torch.Tensor  # [rows, entries]: the same for the text encoder(s)


def _identity(spec: AdapterSpec) -> tuple[object, ...]:
    """What two rows must share for one stacked entry to serve both (the weights become coefficients)."""
    blocks = json.dumps(spec.block_weights, sort_keys=True) if spec.block_weights is not None else None
    schedule = spec.schedule.to_text() if spec.schedule is not None else None
    return id(spec.adapter), spec.role, blocks, schedule


def batchable(per_row: Sequence[Sequence[AdapterSpec]]) -> bool:
    """Whether these rows can share a pass: no adapter updates a norm layer (those edits are not per row)."""
    return not any(getattr(module, "is_norm", False) for specs in per_row for spec in specs
                   for module in spec.adapter.modules.values())


def row_plan(per_row: Sequence[Sequence[AdapterSpec]]) -> RowPlan:
    """The union of the rows' adapter sets and the coefficient matrices (see the module docstring)."""
    entries: list[AdapterSpec] = []
    index: dict[tuple[object, ...], int] = {}
    names: set[str] = set()
    for specs in per_row:
        for spec in specs:
            key = _identity(spec)
            if key in index:
                continue
            name = spec.name if spec.name not in names else f"{spec.name}#{len(entries)}"
            names.add(name)
            index[key] = len(entries)
            entries.append(AdapterSpec(name, spec.adapter, 1.0, role=spec.role, block_weights=spec.block_weights,
                                       schedule=spec.schedule))
    unet = torch.zeros(len(per_row), len(entries), dtype=torch.float32)
    text = torch.zeros(len(per_row), len(entries), dtype=torch.float32)
    for row, specs in enumerate(per_row):
        for spec in specs:
            column = index[_identity(spec)]
            unet[row, column] += spec.component_weight("unet")
            text[row, column] += spec.component_weight("text_encoder")
    return RowPlan(entries, unet, text)
