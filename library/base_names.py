"""How bases are named in metadata (modelspec, kohya ``ss_*``, A1111, Civitai) and what Medley writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# base -> (modelspec.architecture, ss_base_model_version, modelspec.implementation, modelspec.resolution)
WRITTEN_NAMES: dict[str, tuple[str, str, str, str]] = {
    "sd1": ("stable-diffusion-v1/lora", "sd_v1", "diffusers", "512x512"),
    "sd2": ("stable-diffusion-v2-512/lora", "sd_v2", "diffusers", "512x512"),
    "sdxl": ("stable-diffusion-xl-v1-base/lora", "sdxl_base_v1-0", "https://github.com/Stability-AI/generative-models",
             "1024x1024"),
    "toy": ("medley-toy/lora", "medley_toy", "diffusers", "32x32"),
    "unknown": ("unknown/lora", "", "diffusers", ""),
}
HINT_KEYS: tuple[str, ...] = ("modelspec.architecture", "ss_base_model_version", "ss_sd_model_name", "ss_v2")
# kohya's sd-scripts writes ss_base_model_version "flux1", "sd3"... and modelspec.architecture
# "flux-1-dev/lora", "stable-diffusion-v3-medium/lora": base_from_text reads both.


def base_from_text(text: str | None) -> str | None:
    """``stable-diffusion-xl-v1-base/lora``, ``sd_v1``, ``SD 1.5``, ``SDXL 1.0``, ``Pony``, ``Flux.1 D``,
    ``SD 3.5 Large``, ``stable-diffusion-v3-medium/lora``... -> a base name."""
    if not text:
        return None
    value = text.strip().lower().replace("_", "-").replace(" ", "-")
    if "toy" in value or "medley" in value:
        return "toy"
    if "flux" in value:
        return "flux"
    if any(marker in value for marker in ("sd3", "sd-3", "sd-v3", "diffusion-v3", "diffusion-3", "sd3.5")):
        return "sd3"
    if "xl" in value or "pony" in value or "illustrious" in value or "noobai" in value:
        return "sdxl"
    if any(marker in value for marker in ("sd-v2", "sd2", "sd-2", "v2-", "diffusion-v2", "2.0", "2.1")):
        return "sd2"
    if any(marker in value for marker in ("sd-v1", "sd1", "sd-1", "v1-", "diffusion-v1", "1.4", "1.5")):
        return "sd1"
    return None


def hints_from_metadata(metadata: Mapping[str, str]) -> list[str]:
    """Bases the header metadata names, most specific source first."""
    hints: list[str] = []
    for key in ("modelspec.architecture", "ss_base_model_version"):
        base = base_from_text(metadata.get(key))
        if base is not None:
            hints.append(base)
    if metadata.get("ss_v2", "").lower() == "true":
        hints.append("sd2")
    return unique(hints)


def unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return [v for v in values if not (v in seen or seen.add(v))]
