"""Random-weight Stable Diffusion folders (SD1, SD2-v, SDXL) of small size, for tests and smoke runs.

Each is a real diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``; SDXL adds ``text_encoder_2/`` and ``tokenizer_2/``) that
``pipeline.load_base(DIR)`` and ``medley generate --base DIR`` load as they load a downloaded model.
Module names follow the real models (so real adapters' targets resolve); widths are cut down except
the cross-attention width, which is what tells the families apart (768 SD1, 1024 SD2, 2048 SDXL).
The CLIP tokenizer gets a tiny word-level vocabulary written here (no download).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FAMILIES: tuple[str, ...] = ("sd1", "sd2", "sdxl")
_WORDS = ("a", "red", "blue", "green", "circle", "square", "on", "background", "photo", "of", "cat", "style")


def _tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in _WORDS:
        vocab[f"{word}</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_encoder(hidden: int, projection: bool = False):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(_WORDS) + 2, hidden_size=hidden, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae():  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 32), in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4,
                         norm_num_groups=16, sample_size=32)


def tiny_sd_pipeline(family: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """A random-weight pipeline of ``family`` (sd1: epsilon, 768-d; sd2: v-prediction, 1024-d; sdxl: two
    text encoders, 2048-d), in a temporary tokenizer folder's company (see :func:`save_tiny_sd`)."""
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    torch.manual_seed(seed)
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="medley-tiny-tokenizer-"))
    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                  norm_num_groups=16, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    if family == "sdxl":
        unet = UNet2DConditionModel(**common, cross_attention_dim=2048, attention_head_dim=(2, 4),
                                    use_linear_projection=True, addition_embed_type="text_time",
                                    addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                                    projection_class_embeddings_input_dim=8 * 6 + 32)
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           timestep_spacing="leading", steps_offset=1)
        return StableDiffusionXLPipeline(vae=_vae(), text_encoder=_text_encoder(768),
                                         text_encoder_2=_text_encoder(1280, projection=True),
                                         tokenizer=_tokenizer(scratch / "one"), tokenizer_2=_tokenizer(scratch / "two"),
                                         unet=unet, scheduler=scheduler)
    width = 768 if family == "sd1" else 1024
    unet = UNet2DConditionModel(**common, cross_attention_dim=width, attention_head_dim=8,
                                use_linear_projection=family == "sd2")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1,
                              prediction_type="epsilon" if family == "sd1" else "v_prediction")
    return StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(width), tokenizer=_tokenizer(scratch),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_sd(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight ``family`` model as a diffusers folder; returns ``folder``."""
    pipe = tiny_sd_pipeline(family, seed)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)
