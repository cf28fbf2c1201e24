"""Read any supported adapter file into the canonical :class:`~library.lora.LoraAdapter`.

``plan_file`` reads only the header (fast, for the catalogue); ``read_adapter`` then loads the tensors the
plan names through ``safetensors.safe_open``, which is only reached once the header has passed every check
in library/formats/header.py. Before any naming convention is tried, a file is refused when it holds a
family Medley does not read (library/formats/families.py) or an adapter for another kind of model
(library/formats/foreign.py); a file of embeddings only is a textual inversion (no modules).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from library.base_names import hints_from_metadata, unique
from library.errors import AdapterFileError, UnsupportedFamilyError
from library.families import load_module
from library.families.base import ALPHA
from library.families.embedding import (
    BUNDLE_PREFIX,
    EMBED_MARK,
    TextualInversion,
    check_embeddings,
    embedding_base,
    find_embeddings,
    read_embeddings,
)
from library.formats import cloneofsimo, diffusers_legacy, kohya, peft
from library.formats.families import refuse_unsupported_families
from library.formats.foreign import refuse_foreign
from library.formats.header import SafetensorsHeader, read_header
from library.formats.names import resolve_targets
from library.formats.plan import AdapterPlan, PlannedModule
from library.layouts.model_layout import ModelLayout, known_layouts
from library.lora import AdapterModule, LoraAdapter
from library.transformer_names import at_root, transformer_base

EMBEDDING_FORMAT = "textual-inversion"
_DIFFUSION_PREFIX = "diffusion_model."  # BFL / ComfyUI names of a FLUX transformer's modules


def detect_format(file_name: str, keys: Sequence[str]) -> str:
    """``kohya``, ``diffusers-legacy``, ``diffusers-peft`` or ``peft``; raises for anything else."""
    refuse_unsupported_families(file_name, list(keys))
    formats: set[str] = set()
    unknown: list[str] = []
    for key in keys:
        if kohya.claims(key):
            formats.add(kohya.FORMAT)
        elif peft.claims(key):
            formats.add(peft.PLAIN_FORMAT if key.startswith("base_model.model.") else peft.DIFFUSERS_FORMAT)
        elif diffusers_legacy.claims(key):
            formats.add(diffusers_legacy.FORMAT)
        elif not key.endswith(".alpha"):
            unknown.append(key)
    if unknown:
        raise AdapterFileError(f"{file_name}: {len(unknown)} tensor(s) match no LoRA format Medley reads, "
                               f"e.g. {unknown[0][:120]!r}")
    if len(formats) > 1:
        raise AdapterFileError(f"{file_name}: mixes LoRA formats ({', '.join(sorted(formats))})")
    if not formats:
        raise AdapterFileError(f"{file_name}: holds no LoRA weights")
    return formats.pop()


def _subset(header: SafetensorsHeader, keys: Sequence[str]) -> SafetensorsHeader:
    return dataclasses.replace(header, tensors={key: header.tensors[key] for key in keys})


def _as_transformer(modules: list[PlannedModule], hints: list[str]) -> tuple[list[PlannedModule], str | None]:
    """FLUX / SD3 modules move to the ``transformer`` component (no layout of Medley's knows them)."""
    names = [m.name for m in modules if m.component in (None, "unet")]
    widths = [m.weight.in_features for m in modules if m.weight is not None and at_root(m.name)]
    base = transformer_base(names, widths, hints)
    if base is None:
        return modules, None
    moved = [dataclasses.replace(m, component="transformer", name=m.name.removeprefix(_DIFFUSION_PREFIX)
                                 if m.component is None else m.name)
             if m.component in (None, "unet") else m for m in modules]
    return moved, base


def _plan_modules(file_name: str, header: SafetensorsHeader, keys: Sequence[str],
                  configs: Mapping[str | None, peft.LoraConfigView]) -> tuple[str, list[PlannedModule], list[str]]:
    file_format = detect_format(file_name, keys)
    part = _subset(header, keys)
    if file_format == kohya.FORMAT:
        modules, hints = kohya.plan(file_name, part)
    elif file_format == diffusers_legacy.FORMAT:
        modules, hints = diffusers_legacy.plan(file_name, part)
    else:
        header_configs = peft.configs_from_metadata(file_name, header.metadata)
        modules, hints = peft.plan(file_name, part, header_configs or configs)
    return file_format, modules, hints


def plan_header(file_name: str, header: SafetensorsHeader, layouts: Sequence[ModelLayout],
                configs: Mapping[str | None, peft.LoraConfigView] | None = None,
                raw_config: Mapping[str, Any] | None = None) -> AdapterPlan:
    """The plan of a parsed header (``configs``/``raw_config``: a PEFT config found beside the file)."""
    keys = list(header.tensors)
    refuse_unsupported_families(file_name, keys)
    refuse_foreign(file_name, keys, raw_config)
    stem = Path(file_name).name.removesuffix(Path(file_name).suffix)
    embeddings = find_embeddings(stem, {k: e.shape for k, e in header.tensors.items()}, header.metadata)
    check_embeddings(file_name, embeddings, {k: e.dtype for k, e in header.tensors.items()})
    embedded = {e.key for e in embeddings}
    rest = [key for key in keys if key not in embedded]
    hints = hints_from_metadata(header.metadata)
    base_of_embeddings = embedding_base(embeddings)
    if not rest:
        return AdapterPlan(format=EMBEDDING_FORMAT, modules={}, metadata=dict(header.metadata),
                           hints=unique([*hints, *([base_of_embeddings] if base_of_embeddings else [])]),
                           embeddings=embeddings)
    loose = [e for e in embeddings if not e.key.startswith(BUNDLE_PREFIX) and header.metadata.get(e.key) != EMBED_MARK]
    if loose:
        raise UnsupportedFamilyError(f"{file_name}: holds adapter weights and a textual-inversion embedding "
                                     f"({loose[0].key[:60]!r}) together, with no token named for it; refused")
    if cloneofsimo.claims(rest):
        strays = [key for key in rest if not cloneofsimo.KEY.match(key)]
        if strays:
            raise AdapterFileError(f"{file_name}: mixes cloneofsimo/lora keys with {strays[0][:80]!r}")
        modules, layout_name = cloneofsimo.plan(file_name, _subset(header, rest), layouts, hints)
        targets, _ = resolve_targets(file_name, modules, [], hints)
        return AdapterPlan(format=cloneofsimo.FORMAT, modules=targets, metadata=dict(header.metadata),
                           hints=unique([*hints, layout_name]), layout=layout_name, embeddings=embeddings)
    file_format, modules, format_hints = _plan_modules(file_name, header, rest, configs or {})
    hints = unique([*hints, *format_hints])
    modules, transformer = _as_transformer(modules, hints)
    if transformer is not None:
        targets, layout_name = resolve_targets(file_name, modules, [], hints)
        hints = unique([transformer, *hints])
    else:
        targets, layout_name = resolve_targets(file_name, modules, layouts, hints)
    return AdapterPlan(format=file_format, modules=targets, metadata=dict(header.metadata), hints=hints,
                       layout=layout_name, embeddings=embeddings)


def plan_file(path: Path, layouts: Sequence[ModelLayout] | None = None) -> AdapterPlan:
    """Read and check the header of ``path``; raise :class:`AdapterFileError` for anything unreadable."""
    path = Path(path)
    header = read_header(path)
    raw_config = peft.raw_config_beside(path)
    configs = peft.config_views(path.name, raw_config)
    return plan_header(path.name, header, known_layouts() if layouts is None else layouts, configs, raw_config)


def _load(plan: PlannedModule, handle: Any) -> AdapterModule:
    tensors = {parameter: handle.get_tensor(key) for parameter, key in plan.keys.items() if parameter != ALPHA}
    alpha = plan.alpha
    if alpha is None and plan.alpha_key is not None:
        alpha = float(handle.get_tensor(plan.alpha_key).double().reshape(-1)[0].item())
    return load_module(plan.family, tensors, alpha, plan.weight)


def read_adapter(path: Path, layouts: Sequence[ModelLayout] | None = None) -> LoraAdapter:
    """The canonical adapter of the file ``path`` (safetensors only; pickles are refused)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    plan = plan_file(path, layouts)
    if not plan.modules:
        raise AdapterFileError(f"{path.name}: is a textual-inversion embedding ({', '.join(plan.tokens)[:80]}), "
                               "which changes no module of the base; it has no adapter weights to apply")
    modules: dict[str, AdapterModule] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for target, module in plan.modules.items():
                modules[target] = _load(module, handle)
    except (OSError, RuntimeError, ValueError, SafetensorError) as error:
        raise AdapterFileError(f"{path.name}: cannot read tensors ({str(error)[:100]})") from None
    return LoraAdapter(modules=modules, metadata=plan.metadata, source_format=plan.format)


def read_textual_inversion(path: Path) -> TextualInversion:
    """The embeddings a file holds (a textual inversion, or tokens bundled with a LoRA)."""
    path = Path(path)
    plan = plan_file(path)
    if not plan.embeddings:
        raise AdapterFileError(f"{path.name}: holds no textual-inversion embedding")
    return read_embeddings(path, plan.embeddings, plan.metadata)
