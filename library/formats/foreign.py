"""Adapters that are not for a diffusion model: refused with what they are for.

PEFT trains adapters for every kind of model; a folder of downloads holds LoRAs of language models and
classifiers beside the image ones. They are told by their module names (GPT-2 ``transformer.h.N``,
LLaMA-style ``model.layers.N``, T5 ``encoder.block.N``...), by heads only a text or image classifier has
(``score``, ``classifier``, ``lm_head``), by their config's ``task_type`` and by LoRA-ViT's bare
``w_a_000``/``w_b_000`` keys (a ViT / SAM image encoder's qkv LoRA).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from library.errors import ForeignAdapterError

_PEFT = "base_model.model."
# module name pattern -> what it belongs to
_MODELS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^transformer\.h\.\d+\."), "a GPT-2-style language model (transformer.h.N blocks)"),
    (re.compile(r"^(?:model\.)?layers\.\d+\.(?:self_attn|mlp)\.(?:[qkvo]_proj|gate_proj|up_proj|down_proj)"),
     "a LLaMA-style language model (model.layers.N blocks)"),
    (re.compile(r"^model\.(?:decoder|encoder)\.layers\.\d+\."), "an encoder-decoder / OPT-style language model"),
    (re.compile(r"^(?:encoder|decoder)\.block\.\d+\."), "a T5-style text model (encoder.block.N)"),
    (re.compile(r"^gpt_neox\.layers\.\d+\."), "a GPT-NeoX language model"),
    (re.compile(r"^(?:bert|roberta|deberta|electra|albert)\.encoder\.layer\.\d+\."), "a BERT-style text encoder"),
    (re.compile(r"^distilbert\.transformer\.layer\.\d+\."), "a DistilBERT text model"),
    (re.compile(r"^(?:vit|deit|beit|swin|dinov2)\.encoder\."), "a vision transformer (image classifier)"),
)
_HEADS: tuple[tuple[str, str], ...] = (
    ("score", "a sequence-classification head (score)"),
    ("classifier", "a classification head (classifier)"),
    ("lm_head", "a language-model head (lm_head)"),
    ("qa_outputs", "a question-answering head (qa_outputs)"),
)
_TASKS = {"CAUSAL_LM": "causal language modelling", "SEQ_CLS": "sequence classification",
          "SEQ_2_SEQ_LM": "sequence-to-sequence language modelling", "TOKEN_CLS": "token classification",
          "QUESTION_ANS": "question answering", "FEATURE_EXTRACTION": "text feature extraction"}
_VIT = re.compile(r"^w_[ab]_\d+$")


def _config_words(config: Mapping[str, Any] | None) -> str:
    if not config:
        return ""
    parts = []
    base = config.get("base_model_name_or_path")
    if isinstance(base, str) and base:
        parts.append(f"base model {base[:60]}")
    task = config.get("task_type")
    if isinstance(task, str) and task in _TASKS:
        parts.append(f"task {task}: {_TASKS[task]}")
    return f" ({'; '.join(parts)})" if parts else ""


def foreign_use(keys: Sequence[str], config: Mapping[str, Any] | None = None) -> str | None:
    """What the adapter with these keys is for, when that is not a diffusion model; else None."""
    if keys and all(_VIT.match(key) for key in keys):
        return ("LoRA-ViT weights (bare w_a_NNN / w_b_NNN: low-rank updates of a ViT or SAM image encoder's "
                "qkv projections)")
    names = [key[len(_PEFT):] if key.startswith(_PEFT) else key for key in keys]
    model = next((what for pattern, what in _MODELS for name in names if pattern.match(name)), None)
    heads = [what for head, what in _HEADS if any(name == head or name.startswith(head + ".") for name in names)]
    task = config.get("task_type") if config else None
    if model is None and not heads and task not in _TASKS:
        return None
    what = model or "a text or image model"
    if heads:
        what += " with " + " and ".join(heads)
    return f"a PEFT adapter for {what}{_config_words(config)}"


def refuse_foreign(file_name: str, keys: Sequence[str], config: Mapping[str, Any] | None = None) -> None:
    use = foreign_use(keys, config)
    if use is not None:
        raise ForeignAdapterError(f"{file_name}: is {use}, not an adapter for a text-to-image diffusion model; "
                                  "refused")
