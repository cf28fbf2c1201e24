"""Break-for-Make (Xu et al. 2024, "Break-for-Make: Modular Low-Rank Adaptations for
Composable Content-Style Customization").

B4M trains content and style in separated subspaces of one LoRA: the up projection is
split by output rows into a frozen part A and a part B, the down projection by input
columns into a frozen part C and a part D, with A and C shared (the same orthogonal
initialisation) by both adapters. The style adapter learns B, the content adapter D, and
the composed adapter is

    dW = [A; w_s B_style] [C | w_c D_content]      (rows of up; columns of down)

Medley detects such adapters by the metadata ``medley.b4m`` = ``content`` / ``style``, and
the split by ``medley.b4m.frozen`` (the fraction of rows/columns that is frozen, default
0.5; row split = round(frac * out), column split = round(frac * in)).

For ordinary LoRAs a training-free approximation: project the style update's up columns
off the content update's column space (``project="both"`` also projects content off the
original style), so the two write to orthogonal output directions, then sum:

    B_s' = (I - Q_c Q_c^T) B_s,   Q_c = orth(B_c),   dW = s_c B_c A_c + s_s B_s' A_s
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fusion.methods.base import FusionMethod, one_content_one_style
from fusion.spec import AdapterSpec
from library.lora import AdapterModule, DenseModule, LoraAdapter, LoraModule

METADATA_ROLE = "medley.b4m"
METADATA_FROZEN = "medley.b4m.frozen"


def b4m_role(adapter: LoraAdapter) -> str | None:
    role = adapter.metadata.get(METADATA_ROLE)
    return role if role in ("content", "style") else None


def frozen_fraction(adapter: LoraAdapter) -> float:
    value = float(adapter.metadata.get(METADATA_FROZEN, "0.5"))
    if not 0.0 < value < 1.0:
        raise ValueError(f"{METADATA_FROZEN} must lie in (0, 1), got {value}")
    return value


def compose_b4m(content: LoraModule, style: LoraModule, frozen: float, w_content: float, w_style: float) -> LoraModule:
    """[A; w_s B_style] [C | w_c D_content] for one module (both adapters must share rank and alpha)."""
    if content.rank != style.rank or content.down.shape != style.down.shape or content.up.shape != style.up.shape:
        raise ValueError("Break-for-Make content and style adapters must have the same shapes and rank")
    rows = round(frozen * content.out_features)
    columns = round(frozen * content.in_features)
    up = torch.cat([style.up[:rows], w_style * style.up[rows:]], dim=0)  # A shared; B from style
    down = torch.cat([content.down[:, :columns], w_content * content.down[:, columns:]], dim=1)  # C; D content
    return LoraModule(down=down, up=up, alpha=content.alpha)


def _flat_up(module: LoraModule) -> torch.Tensor:
    return module.up.reshape(module.up.shape[0], module.rank).float()


def project_off(module: LoraModule, other: LoraModule) -> LoraModule:
    """``module`` with its up columns projected off ``other``'s column space."""
    basis, _ = torch.linalg.qr(_flat_up(other))
    up = _flat_up(module)
    projected = up - basis @ (basis.T @ up)
    return LoraModule(down=module.down, up=projected.reshape(module.up.shape).to(module.up.dtype), alpha=module.alpha)


class B4MMethod(FusionMethod):
    name = "b4m"

    def __init__(self, project: str = "style") -> None:
        if project not in ("style", "both"):
            raise ValueError("b4m: project must be 'style' or 'both'")
        self.project = project
        self.mode = ""

    def options(self) -> dict[str, Any]:
        return {"mode": self.mode, "project": self.project}

    def prepare(self, specs: list[AdapterSpec], components: Mapping[str, nn.Module]) -> list[AdapterSpec]:
        roles = [b4m_role(spec.adapter) for spec in specs]
        if "content" in roles and "style" in roles:
            return self._make(specs, roles)
        return self._project(specs)

    def _make(self, specs: list[AdapterSpec], roles: list[str | None]) -> list[AdapterSpec]:
        if roles.count("content") != 1 or roles.count("style") != 1:
            raise ValueError("b4m: compose exactly one Break-for-Make content and one style adapter")
        c, s = roles.index("content"), roles.index("style")
        content, style = specs[c], specs[s]
        frozen = frozen_fraction(content.adapter)
        if frozen_fraction(style.adapter) != frozen:
            raise ValueError("b4m: content and style adapters were trained with different frozen fractions")
        modules: dict[str, AdapterModule] = {}
        for target in sorted(set(content.adapter.modules) | set(style.adapter.modules)):
            cm, sm = (None if m is None else _low_rank(spec.name, target, m)
                      for m, spec in ((content.adapter.modules.get(target), content),
                                      (style.adapter.modules.get(target), style)))
            component = target.partition(".")[0]
            wc, ws = content.component_weight(component), style.component_weight(component)
            if cm is not None and sm is not None:
                modules[target] = compose_b4m(cm, sm, frozen, wc, ws)
            else:  # only one adapter has this module: it acts alone, with its weight folded in
                only, weight = (cm, wc) if cm is not None else (sm, ws)
                assert only is not None
                modules[target] = LoraModule(down=only.down, up=only.up * weight, alpha=only.alpha)
        made = AdapterSpec(
            name=f"{content.name}+{style.name}",
            adapter=LoraAdapter(modules, metadata={"medley.b4m": "made"}),
            weight=1.0,
            role="other",
        )
        self.mode = "make"
        return [made] + [spec for i, spec in enumerate(specs) if i not in (c, s)]

    def _project(self, specs: list[AdapterSpec]) -> list[AdapterSpec]:
        c, s = one_content_one_style(specs, "b4m")
        content, style = specs[c].adapter.modules, specs[s].adapter.modules
        new_style: dict[str, AdapterModule] = dict(style)
        new_content: dict[str, AdapterModule] = dict(content)
        for target in sorted(set(content) & set(style)):
            content_lora = _low_rank(specs[c].name, target, content[target])
            style_lora = style[target].as_lora()
            if getattr(style[target], "needs_base_weight", False):
                raise ValueError(f"b4m: {specs[s].name} has a {style[target].family} update at {target}, which "
                                 "depends on the base weight; Break-for-Make projects a fixed update (use merge or "
                                 "gated for it)")
            if style_lora is None:  # a dense style update: project its output columns off the content subspace
                new_style[target] = project_dense_off(style[target], content_lora)
            else:
                new_style[target] = project_off(style_lora, content_lora)
            if self.project == "both":
                new_content[target] = project_off(content_lora, _low_rank(specs[s].name, target, style[target]))
        out = list(specs)
        out[s] = _replace_adapter(specs[s], LoraAdapter(new_style, dict(specs[s].adapter.metadata)))
        if self.project == "both":
            out[c] = _replace_adapter(specs[c], LoraAdapter(new_content, dict(specs[c].adapter.metadata)))
        self.mode = "project"
        return out


def _low_rank(name: str, target: str, module: AdapterModule) -> LoraModule:
    """``module`` as low-rank factors, or the reason b4m cannot use it."""
    lora = module.as_lora()
    if lora is None:
        raise ValueError(f"b4m: {name} has a dense {module.family} update at {target}; Break-for-Make projects onto "
                         "the low-rank subspace of the other adapter, which a dense update does not have "
                         "(use merge or gated for it)")
    return lora


def project_dense_off(module: AdapterModule, other: LoraModule) -> DenseModule:
    """A dense update with its output columns projected off ``other``'s column space (exact)."""
    basis, _ = torch.linalg.qr(_flat_up(other))
    delta = module.delta(torch.float32)
    flat = delta.reshape(delta.shape[0], -1)
    projected = flat - basis @ (basis.T @ flat)
    return DenseModule(weight=projected.reshape(delta.shape), scale=1.0, source_family=module.family)


def _replace_adapter(spec: AdapterSpec, adapter: LoraAdapter) -> AdapterSpec:
    return AdapterSpec(
        name=spec.name,
        adapter=adapter,
        weight=spec.weight,
        role=spec.role,
        unet_weight=spec.unet_weight,
        te_weight=spec.te_weight,
        block_weights=spec.block_weights,
        schedule=spec.schedule,
    )
