"""The one vocabulary of Medley: what bases, adapter kinds and fusion roles are called.

Every layer imports these names from here (the catalogue, the base loader, the fusion
engine, training, the faces), so a base or a role is spelled and checked in one place.
"""

from __future__ import annotations

# Base families an adapter can be made for. Medley loads and applies adapters on the
# ``APPLICABLE_BASES``; adapters for the others (sd3, flux: transformer bases) are catalogued
# and searchable, and refused with a reason when asked for on an SD base.
BASE_FAMILIES: tuple[str, ...] = ("sd1", "sd2", "sdxl", "sd3", "flux", "toy")
APPLICABLE_BASES: tuple[str, ...] = ("sd1", "sd2", "sdxl", "toy")
BASES: tuple[str, ...] = (*BASE_FAMILIES, "unknown")  # what a catalogue record's ``base`` may hold

# Base family -> human name (for messages).
BASE_NAMES: dict[str, str] = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sdxl": "Stable Diffusion XL",
    "sd3": "Stable Diffusion 3",
    "flux": "FLUX",
    "toy": "the embedded toy base",
    "unknown": "an unknown base",
}

# Cross-attention width of a base's UNet (its text encoder's hidden size) -> base family.
CROSS_ATTENTION_BASES: dict[int, str] = {384: "toy", 768: "sd1", 1024: "sd2", 2048: "sdxl"}

# A catalogue entry's kind is the role it plays when composed: content (a subject, a shape),
# style (a texture, a palette), or other. The fusion methods that treat the two apart
# (gated, klora, b4m) read the role.
KINDS: tuple[str, ...] = ("content", "style", "other")
ROLES: tuple[str, ...] = KINDS

# Break-for-Make trains a content, a style, or a combined adapter.
B4M_ROLES: tuple[str, ...] = ("content", "style", "combined")

# What a base's UNet predicts (its scheduler's ``prediction_type``); the trainers regress to it.
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def check_base(value: str, label: str = "base") -> str:
    if value not in BASES:
        raise ValueError(f"unknown {label} {value!r} (one of {', '.join(BASES)})")
    return value


def check_role(value: str, label: str = "role") -> str:
    if value not in ROLES:
        raise ValueError(f"{label} must be one of {', '.join(ROLES)}, got {value!r}")
    return value
