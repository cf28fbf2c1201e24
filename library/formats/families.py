"""Key families of adapter files Medley does not read, named so the error can say what the file is."""

from __future__ import annotations

from library.errors import UnsupportedFamilyError

# family -> key segments (between dots) that mark it
_SEGMENT_FAMILIES: tuple[tuple[str, frozenset[str]], ...] = (
    ("LyCORIS LoHa", frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"})),
    ("LyCORIS LoKr", frozenset({"lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2"})),
    ("DoRA (weight-decomposed LoRA)", frozenset({"dora_scale", "lora_magnitude_vector"})),
    ("LyCORIS LoCon with CP/Tucker decomposition (lora_mid)", frozenset({"lora_mid"})),
    ("OFT/BOFT", frozenset({"oft_blocks", "oft_diag", "oft_r", "boft_R", "boft_s"})),
    ("LyCORIS full (diff)", frozenset({"diff", "diff_b"})),
    ("LyCORIS GLoRA", frozenset({"a1", "a2", "b1", "b2"})),
    ("LyCORIS norm", frozenset({"w_norm", "b_norm"})),
    ("(IA)3", frozenset({"ia3_l"})),
    ("PEFT embedding LoRA", frozenset({"lora_embedding_A", "lora_embedding_B"})),
)
_WHOLE_KEYS: tuple[tuple[str, frozenset[str]], ...] = (
    ("textual-inversion embedding",
     frozenset({"emb_params", "string_to_param", "clip_l", "clip_g", "string_to_token"})),
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
    for family, keys in _WHOLE_KEYS:
        if key in keys:
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
                f"{file_name}: holds {family} weights (e.g. {key[:120]}), which Medley does not read; "
                "only plain LoRA (down/up) files are supported"
            )
