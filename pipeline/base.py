"""Load a base model: the embedded toy default, a diffusers folder, a single-file
checkpoint, or a hub id (from the local cache only; nothing is downloaded).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from library.quiet import known_warnings_muted
from library.vocabulary import APPLICABLE_BASES, CROSS_ATTENTION_BASES
from pipeline.attention import configure_attention
from pipeline.fusion_host import FusionHost
from pipeline.toy_base import TOY_BASE_DIR, is_toy_base, load_toy_base

PICKLED_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class BaseModelError(ValueError):
    """A base model could not be found or loaded; the message says why and what to do."""


@dataclass
class LoadedBase:
    pipe: DiffusionPipeline
    name: str  # what provenance calls the model
    family: str  # one of library.vocabulary.APPLICABLE_BASES: "toy", "sd1", "sd2", "sdxl"
    model_hash: str  # short hash of the weights, as A1111 prints it
    attention: str  # "sdpa" or "xformers"
    default_size: int
    default_guidance: float
    sampler: str
    prediction_type: str = "epsilon"  # the scheduler's: "epsilon" or "v_prediction" (SD2-v)
    fusion: FusionHost = field(init=False, repr=False)  # the base's persistent fusion session

    def __post_init__(self) -> None:
        if self.family not in APPLICABLE_BASES:
            raise ValueError(f"unknown base family {self.family!r} (one of {', '.join(APPLICABLE_BASES)})")
        self.fusion = FusionHost(self.pipe)

    def release_adapters(self) -> None:
        """Detach the adapters the last generation left attached (the base is restored exactly)."""
        self.fusion.release()


def _weights_hash(files: list[Path]) -> str:
    """A short, stable fingerprint of weight files (first 1 MiB and size of each)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:10]


def _family_of(pipe: DiffusionPipeline) -> str:
    """``sdxl`` for an XL pipeline, else ``sd1`` or ``sd2`` by the UNet's cross-attention width."""
    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    width = getattr(getattr(getattr(pipe, "unet", None), "config", None), "cross_attention_dim", 768)
    family = CROSS_ATTENTION_BASES.get(int(width) if isinstance(width, int) else 768, "sd1")
    return "sd1" if family in ("toy", "sdxl") else family  # a non-XL pipeline of another width: SD1-like


def _device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_base(
    spec: str | Path | None = None,
    device: str | None = None,
    attention: str = "auto",
    dtype: torch.dtype | None = None,
) -> LoadedBase:
    """Load the base named by ``spec`` (None: the embedded toy base).

    ``spec`` may be a diffusers folder (SD1.5/SD2/SDXL), a single-file
    ``.safetensors`` checkpoint, or a hub id already present in the local cache.
    Pickled checkpoints are refused: they can run arbitrary code when loaded.
    """
    target = _device(device)
    if dtype is None:
        dtype = torch.float16 if target.type == "cuda" else torch.float32
    if spec is None or str(spec) in ("", "toy", "embedded"):
        return _finish(load_toy_base(TOY_BASE_DIR, torch.float32), "toy-base", "toy", TOY_BASE_DIR, target, attention)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise BaseModelError(
                f"{path} is a folder but has no model_index.json; point --base at a diffusers model folder"
            )
        if is_toy_base(path):
            return _finish(load_toy_base(path, torch.float32), path.name, "toy", path, target, attention)
        index = json.loads((path / "model_index.json").read_text())
        cls = StableDiffusionXLPipeline if "XL" in str(index.get("_class_name", "")) else StableDiffusionPipeline
        try:
            with known_warnings_muted():  # torch_dtype=: what every diffusers >= 0.32 accepts; newer ones warn
                pipe = cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True, safety_checker=None)
        except Exception as error:  # noqa: BLE001 - re-raised with the reason a user can act on
            raise BaseModelError(f"could not load the diffusers folder {path}: {error}") from error
        return _finish(pipe, path.name, _family_of(pipe), path, target, attention)
    if path.suffix.lower() in PICKLED_SUFFIXES:
        raise BaseModelError(
            f"refusing to load {path.name}: pickled checkpoints ({', '.join(PICKLED_SUFFIXES)}) can run code; "
            "convert it to .safetensors first"
        )
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise BaseModelError(f"no such checkpoint file: {path}")
        cls = StableDiffusionXLPipeline if _is_sdxl_checkpoint(path) else StableDiffusionPipeline
        try:
            with known_warnings_muted():  # torch_dtype=: what every diffusers >= 0.32 accepts; newer ones warn
                pipe = cls.from_single_file(str(path), torch_dtype=dtype, local_files_only=True)
        except Exception as error:  # noqa: BLE001
            raise BaseModelError(
                f"could not load the single-file checkpoint {path}: {error}. Single files need their "
                "model config from the local Hugging Face cache; a diffusers folder needs nothing else."
            ) from error
        return _finish(pipe, path.stem, _family_of(pipe), path, target, attention)
    if _HUB_ID.match(str(spec)) and not path.exists():
        try:
            with known_warnings_muted():  # torch_dtype=: what every diffusers >= 0.32 accepts; newer ones warn
                pipe = DiffusionPipeline.from_pretrained(str(spec), torch_dtype=dtype, local_files_only=True)
        except Exception as error:  # noqa: BLE001
            raise BaseModelError(
                f"hub id {spec!r} is not in the local cache and Medley does not download models; "
                "download it once elsewhere (or copy the folder here) and pass its path to --base"
            ) from error
        return _finish(pipe, str(spec), _family_of(pipe), None, target, attention)
    raise BaseModelError(
        f"base {str(spec)!r} not found: expected a diffusers folder, a .safetensors checkpoint, or a cached hub id"
    )


def _is_sdxl_checkpoint(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return any(key.startswith("conditioner.embedders.1") for key in handle.keys())


def _finish(
    pipe: DiffusionPipeline, name: str, family: str, source: Path | None, device: torch.device, attention: str
) -> LoadedBase:
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    backend = configure_attention(pipe, attention)
    if source is None:
        model_hash = hashlib.sha256(name.encode()).hexdigest()[:10]
    elif source.is_dir():
        model_hash = _weights_hash(list(source.rglob("*.safetensors")))
    else:
        model_hash = _weights_hash([source])
    size = {"toy": 32, "sd1": 512, "sd2": 768, "sdxl": 1024}[family]
    sample_size = getattr(getattr(pipe, "unet", None), "config", None)
    if family != "toy" and sample_size is not None:
        size = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    return LoadedBase(
        pipe=pipe,
        name=name,
        family=family,
        model_hash=model_hash,
        attention=backend,
        default_size=size,
        default_guidance=3.0 if family == "toy" else (5.0 if family == "sdxl" else 7.5),
        sampler=type(pipe.scheduler).__name__.replace("Scheduler", ""),
        prediction_type=str(getattr(pipe.scheduler.config, "prediction_type", "epsilon")),
    )
