"""Turn the module names a file uses into canonical targets (``unet.<diffusers module path>``).

Each built-in layout (and any the caller adds, e.g. of the loaded base) is tried;
the one that resolves the most names with matching shapes wins, ties going to the
bases the metadata names. Names no layout knows are unflattened by rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from library.errors import AdapterFileError
from library.formats.plan import PlannedModule
from library.layouts.model_layout import ModelLayout, ModuleShape, flatten

# identifiers that hold underscores of their own, for names no layout knows
_COMPOUND_WORDS = frozenset({
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out", "proj_in",
    "proj_out", "conv_in", "conv_out", "conv_shortcut", "conv_norm_out", "time_emb_proj", "time_embedding",
    "linear_1", "linear_2", "add_embedding", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
    "text_projection", "final_layer_norm", "layer_norm1", "layer_norm2", "input_blocks", "output_blocks",
    "middle_block", "in_layers", "out_layers", "emb_layers", "skip_connection", "time_embed", "label_emb",
    "norm_out", "double_blocks", "single_blocks", "single_transformer_blocks",
    "joint_blocks", "x_block", "context_block", "img_attn", "txt_attn", "img_mlp", "txt_mlp", "img_mod", "txt_mod",
    "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "to_added_qkv", "ff_context", "norm1_context",
    "x_embedder", "context_embedder", "time_text_embed", "proj_mlp", "adaLN_modulation", "final_layer", "img_in",
    "txt_in", "time_in", "vector_in", "guidance_in", "timestep_embedder", "text_embedder", "guidance_embedder",
})


def unflatten(flat_name: str) -> str:
    """Best-effort dotted name of a flattened module name no layout knows."""
    tokens = flat_name.split("_")
    parts: list[str] = []
    index = 0
    while index < len(tokens):
        for width in (3, 2):
            word = "_".join(tokens[index : index + width])
            if index + width <= len(tokens) and word in _COMPOUND_WORDS:
                parts.append(word)
                index += width
                break
        else:
            parts.append(tokens[index])
            index += 1
    return ".".join(parts)


def _resolve(layout: ModelLayout, module: PlannedModule) -> tuple[str, str, bool] | None:
    """(component, module path, shapes match) in ``layout``, or None."""
    components = [module.component] if module.component else list(layout.modules)
    for component in components:
        if component is None:
            continue
        path = None
        if not module.flat and module.name in layout.modules.get(component, {}):
            path = module.name
        if path is None:
            path = layout.resolve(component, module.name if module.flat else flatten(module.name))
        if path is not None:
            return component, path, _same_shape(layout.shape(component, path), module)
    return None


def _same_shape(shape: ModuleShape | None, module: PlannedModule) -> bool:
    """The layout's weight is the module's, or (``flat_in``) a conv whose in * kh * kw the module's in is."""
    if shape is None or module.weight is None:
        return False
    if shape == module.weight:
        return True
    return (module.flat_in and shape.kernel is not None and module.weight.kernel is None
            and shape.out_features == module.weight.out_features
            and shape.in_features * shape.kernel[0] * shape.kernel[1] == module.weight.in_features)


def _fallback(module: PlannedModule) -> tuple[str, str]:
    component = module.component or "unet"
    return component, unflatten(module.name) if module.flat else module.name


def _ordered(layouts: Sequence[ModelLayout], hints: Sequence[str]) -> list[ModelLayout]:
    rank = {base: position for position, base in enumerate(hints)}
    return sorted(layouts, key=lambda layout: rank.get(layout.name, len(rank)))


def resolve_targets(file_name: str, modules: Sequence[PlannedModule], layouts: Sequence[ModelLayout],
                    hints: Sequence[str]) -> tuple[dict[str, PlannedModule], str | None]:
    """{target: module with ``target`` set}, and the name of the layout used (None: none fitted)."""
    best: tuple[tuple[int, int], ModelLayout, list[tuple[str, str, bool] | None]] | None = None
    for layout in _ordered(layouts, hints):
        found = [_resolve(layout, module) for module in modules]
        score = (sum(1 for hit in found if hit and hit[2]), sum(1 for hit in found if hit))
        if best is None or score > best[0]:
            best = (score, layout, found)
    chosen = best[1] if best is not None and best[0][1] > 0 else None
    found = best[2] if chosen is not None and best is not None else [None] * len(modules)
    targets: dict[str, PlannedModule] = {}
    for module, hit in zip(modules, found, strict=True):
        component, path = (hit[0], hit[1]) if hit else _fallback(module)
        target = f"{component}.{path}"
        if target in targets:
            raise AdapterFileError(f"{file_name}: two entries ({targets[target].name}, {module.name}) "
                                   f"both target {target}")
        weight = module.weight
        if hit and hit[2] and chosen is not None:  # a flattened conv learns its kernel from the layout
            weight = chosen.shape(component, path)
        targets[target] = dataclasses.replace(module, target=target, weight=weight,
                                              flat_in=module.flat_in and not (hit and hit[2]))
    return targets, chosen.name if chosen is not None else None
