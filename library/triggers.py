"""Trigger words: the one function that puts an adapter's trigger words into a prompt.

Generation (``pipeline.studio``), the composer's plan (``retrieval.composer``) and
``medley search`` all place triggers here, so the prompt a plan shows is the prompt the
base gets. Rule: for each adapter, in order, none of whose trigger words the prompt holds
(as whole words, case-insensitive), its first ``per_adapter`` triggers are put in front of
the prompt, once each: ``"zorbl, inkwash style, a red circle"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


def has_trigger(prompt: str, trigger: str) -> bool:
    """Whether ``trigger`` appears in ``prompt`` as whole words (case-insensitive); an empty trigger always does."""
    words = trigger.strip()
    if not words:
        return True
    return re.search(rf"(?<!\w){re.escape(words)}(?!\w)", prompt, re.IGNORECASE) is not None


def add_triggers(prompt: str, triggers: Iterable[Sequence[str] | str], per_adapter: int = 1) -> str:
    """``prompt`` with the missing trigger words in front; ``triggers`` holds each adapter's trigger list
    (a plain string counts as one adapter with that one trigger)."""
    missing: list[str] = []
    for entry in triggers:
        words = [entry] if isinstance(entry, str) else list(entry)
        words = [word.strip() for word in words if word.strip()]
        if not words or any(has_trigger(prompt, word) for word in words):
            continue
        for word in words[:per_adapter]:
            if not any(has_trigger(known, word) for known in missing):
                missing.append(word)
    if not missing:
        return prompt
    return ", ".join([*missing, prompt]) if prompt.strip() else ", ".join(missing)
