"""Built-in configs of the bases Medley recognises (no weights, nothing downloaded).

UNet configs are ``UNet2DConditionModel`` keyword arguments; text encoders are
(class name, config keyword arguments). ``TOY_UNET`` mirrors
``pipeline.toy_base.new_unet()`` and ``TOY_TEXT_ENCODER`` the all-MiniLM-L6-v2
encoder (a test checks both against the real models).
"""

from __future__ import annotations

from typing import Any

SD1_UNET: dict[str, Any] = {
    "sample_size": 64,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

SD2_UNET: dict[str, Any] = {
    **SD1_UNET,
    "sample_size": 96,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
}

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

TOY_UNET: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [64, 128, 192],
    "layers_per_block": 1,
    "cross_attention_dim": 384,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

CLIP_L: tuple[str, dict[str, Any]] = ("CLIPTextModel", {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "projection_dim": 768, "hidden_act": "quick_gelu",
})
OPEN_CLIP_H: tuple[str, dict[str, Any]] = ("CLIPTextModel", {
    "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
    "projection_dim": 512, "hidden_act": "gelu",
})
OPEN_CLIP_BIGG: tuple[str, dict[str, Any]] = ("CLIPTextModelWithProjection", {
    "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
    "projection_dim": 1280, "hidden_act": "gelu",
})
TOY_TEXT_ENCODER: tuple[str, dict[str, Any]] = ("BertModel", {
    "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12, "num_hidden_layers": 6,
    "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
})

# base name -> (unet config, {text encoder component: (class, config)})
BASE_CONFIGS: dict[str, tuple[dict[str, Any], dict[str, tuple[str, dict[str, Any]]]]] = {
    "sd1": (SD1_UNET, {"text_encoder": CLIP_L}),
    "sd2": (SD2_UNET, {"text_encoder": OPEN_CLIP_H}),
    "sdxl": (SDXL_UNET, {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIGG}),
    "toy": (TOY_UNET, {"text_encoder": TOY_TEXT_ENCODER}),
}
