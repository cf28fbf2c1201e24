"""Captions of a DreamBooth run: instance captions with the trigger word, and CAT's class captions."""

from __future__ import annotations

import re
from collections.abc import Sequence

from training.images import TrainingInputError

_TRIGGER = re.compile(r"^[^\s,<>:]{1,64}$")
_PUNCTUATION = ",.;:!?\"'()"


def check_trigger(trigger: str) -> str:
    if not isinstance(trigger, str) or not _TRIGGER.match(trigger):
        raise TrainingInputError(f"invalid trigger {trigger!r}: one word of up to 64 characters "
                                 "(no spaces, commas, colons or angle brackets)")
    return trigger


def _core(word: str) -> str:
    return word.strip(_PUNCTUATION).lower()


def has_trigger(caption: str, trigger: str) -> bool:
    return any(_core(word) == trigger.lower() for word in caption.split())


def replace_trigger(caption: str, trigger: str, replacement: str | None) -> str:
    """``caption`` with the trigger word replaced by ``replacement`` (or removed): CAT's class caption."""
    words: list[str] = []
    for word in caption.split():
        if _core(word) != trigger.lower():
            words.append(word)
        elif replacement:
            start = word.lower().index(trigger.lower())
            words.append(word[:start] + replacement + word[start + len(trigger):])
        elif words and word[-1:] in ",.;:" and words[-1][-1:] not in ",.;:":
            words[-1] += word[-1]  # keep the punctuation the removed word carried
    return " ".join(words)


def class_word_of(class_prompt: str | None, class_word: str | None) -> str | None:
    """The class noun: given, or the last word of the class prompt (``a photo of a dog`` -> ``dog``)."""
    if class_word:
        return class_word.strip()
    if class_prompt:
        words = [w.strip(_PUNCTUATION) for w in class_prompt.split()]
        words = [w for w in words if w]
        return words[-1] if words else None
    return None


def instance_captions(found: Sequence[str | None], trigger: str, instance_prompt: str | None,
                      class_word: str | None) -> list[str]:
    """One caption per image: the instance prompt if given; else the image's own caption (the trigger
    put in front when it lacks it); else ``a <trigger> <class word>``."""
    if instance_prompt:
        if not has_trigger(instance_prompt, trigger):
            raise TrainingInputError(f"the instance prompt {instance_prompt!r} lacks the trigger {trigger!r}")
        return [instance_prompt] * len(found)
    default = f"a {trigger} {class_word}" if class_word else f"a {trigger}"
    captions: list[str] = []
    for caption in found:
        if not caption:
            captions.append(default)
        elif has_trigger(caption, trigger):
            captions.append(caption)
        else:
            captions.append(f"{trigger}, {caption}")
    return captions
