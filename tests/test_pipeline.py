import numpy as np
import pytest
import torch

from pipeline import BaseModelError, generate, load_base
from pipeline.toy_base import TOKEN_LENGTH


def test_embedded_base_is_a_standard_sd_pipeline(toy_base):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    pipe = toy_base.pipe
    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
    assert pipe.unet.config.cross_attention_dim == 384
    assert pipe.tokenizer.model_max_length == TOKEN_LENGTH
    # SD1.5 module paths, so every LoRA key written for SD names a real module here
    names = dict(pipe.unet.named_modules())
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k" in names
    assert "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q" in names
    assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_v" in names
    assert toy_base.attention == "sdpa"


def test_generate_size_and_determinism(toy_base):
    a = generate(toy_base, "a red circle on a blue background", seed=3, steps=4)
    b = generate(toy_base, "a red circle on a blue background", seed=3, steps=4)
    c = generate(toy_base, "a yellow striped square on a black background", seed=3, steps=4)
    assert a.images[0].size == (32, 32)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(c.images[0]))
    assert a.provenance[0].seed == 3 and a.provenance[0].steps == 4


def test_batch_image_equals_single_generation_with_its_seed(toy_base):
    batch = generate(toy_base, "a green dotted triangle on a white background", seed=10, steps=4, batch=3)
    alone = generate(toy_base, "a green dotted triangle on a white background", seed=12, steps=4)
    assert [p.seed for p in batch.provenance] == [10, 11, 12]
    diff = np.abs(np.asarray(batch.images[2], dtype=int) - np.asarray(alone.images[0], dtype=int))
    assert diff.max() <= 1


def test_base_follows_prompt_colours(toy_base):
    # a blue background should look blue, a white one white: the base conditions on text
    blue = generate(toy_base, "a red circle on a blue background", seed=0, steps=20).images[0]
    white = generate(toy_base, "a red circle on a white background", seed=0, steps=20).images[0]
    corner_blue = np.asarray(blue, dtype=float)[:4, :4].mean(axis=(0, 1))
    corner_white = np.asarray(white, dtype=float)[:4, :4].mean(axis=(0, 1))
    assert corner_blue[2] > corner_blue[0] + 60
    assert corner_white.min() > 180


@pytest.mark.parametrize(
    "bad, message",
    [
        ("/no/such/folder", "not found"),
        ("some-org/some-model", "does not download"),
        ("/tmp/model.ckpt", "pickled"),
        ("/no/such/model.safetensors", "no such checkpoint"),
    ],
)
def test_bad_base_is_a_clear_error(bad, message):
    with pytest.raises(BaseModelError, match=message):
        load_base(bad)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(BaseModelError, match="model_index.json"):
        load_base(tmp_path)


def test_invalid_settings_are_refused(toy_base):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(toy_base, "  ")
    with pytest.raises(ValueError, match="steps"):
        generate(toy_base, "a red circle", steps=0)
    with pytest.raises(ValueError, match="multiple of 2"):
        generate(toy_base, "a red circle", width=33)


def test_attention_backend_refuses_xformers_without_cuda(toy_base):
    from pipeline.attention import configure_attention

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA"):
        configure_attention(toy_base.pipe, "xformers")
