"""Key families of adapter files Medley does not read, named so the error can say what the file is.

(LoRA, LoCon, LoHa, LoKr, full, norm, (IA)^3, DoRA and textual inversion are read: library/families.)"""

from __future__ import annotations

from library.errors import UnsupportedFamilyError

# family -> key segments (between dots) that mark it
_SEGMENT_FAMILIES: tuple[tuple[str, frozenset[str]], ...] = (
    ("OFT/BOFT", frozenset({"oft_blocks", "oft_diag", "oft_r", "boft_R", "boft_s"})),
    ("LyCORIS GLoRA", frozenset({"a1", "a2", "b1", "b2"})),
    ("LyCORIS T-LoRA", frozenset({"lambda_layer"})),
    ("PEFT embedding LoRA", frozenset({"lora_embedding_A", "lora_embedding_B"})),
)
_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("full model checkpoint", ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.")),
)
_SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LoRA with bias", ("lora_B.bias", "lora_up.bias", "lora_A.bias", "lora_down.bias")),
)


def family_of(key: str) -> str | None:
    """The name of the unsupported family ``key`` belongs to, or None."""
    segments = key.split(".")[1:][-3:]  # the parameter part, never the module name
    for family, markers in _SEGMENT_FAMILIES:
        if any(segment in markers for segment in segments):
            return family
    for family, prefixes in _PREFIXES:
        if key.startswith(prefixes):
            return family
    for family, suffixes in _SUFFIXES:
        if key.endswith(suffixes):
            return family
    return None


def refuse_unsupported_families(file_name: str, keys: list[str]) -> None:
    for key in keys:
        family = family_of(key)
        if family is not None:
            raise UnsupportedFamilyError(
                f"{file_name}: holds {family} weights (e.g. {key[:120]}), which Medley does not read"
            )
