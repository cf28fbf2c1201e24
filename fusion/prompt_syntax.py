"""A1111-style LoRA tags in prompts: the one tag parser (trigger words live in :mod:`library.triggers`).

Grammar of a tag (A1111 compatible, plus a step schedule after ``@``)::

    <lora:ALIAS>                       weight 1
    <lora:ALIAS:W>                     weight W for the UNet and the text encoder
    <lora:ALIAS:TE:UNET>               A1111 positional form: text-encoder then UNet weight
    <lora:ALIAS:te=0.5:unet=1>         named weights (``w=`` sets both; ``dyn=`` is ignored)
    <lora:ALIAS:W@SCHEDULE>            weight with a per-step schedule (applies to the UNet)

    SCHEDULE := START            active from START to the end, e.g. 0.5 or 50%
              | START-END        active for START <= p < END, e.g. 0.2-0.6
              | F=V,F=V,...      a curve through (fraction, value) points, e.g. 0=1,1=0.3

``p`` is the fraction of sampling done (0 at the first step). A schedule may follow any
numeric argument; it is the adapter's schedule whichever weight carries it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fusion.schedule import Schedule

_TAG = re.compile(r"<lora:([^>]*)>", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?[0-9]*\.?[0-9]+$")


@dataclass(frozen=True)
class LoraReference:
    """One ``<lora:...>`` tag: which adapter, with which weights and schedule."""

    alias: str
    weight: float = 1.0
    te_weight: float | None = None
    unet_weight: float | None = None
    schedule: Schedule | None = None
    text: str = ""


def _number(text: str, tag: str) -> float:
    text = text.strip()
    if not _NUMBER.match(text):
        raise ValueError(f"{tag}: {text!r} is not a number")
    return float(text)


def parse_tag(body: str) -> LoraReference:
    """Parse the inside of ``<lora:...>`` (without ``lora:``)."""
    tag = f"<lora:{body}>"
    alias, *args = [part.strip() for part in body.split(":")]
    if not alias:
        raise ValueError(f"{tag}: the adapter alias is empty")
    weight, te, unet, schedule = 1.0, None, None, None
    positional: list[float] = []
    for arg in args:
        value_text, at, schedule_text = arg.partition("@")
        if at:
            if schedule is not None:
                raise ValueError(f"{tag}: more than one schedule")
            schedule = Schedule.parse(schedule_text)
        name, eq, value = value_text.partition("=")
        if eq:
            name = name.strip().lower()
            if name == "dyn":
                continue
            number = _number(value, tag)
            if name == "te":
                te = number
            elif name == "unet":
                unet = number
            elif name == "w":
                weight = number
            else:
                raise ValueError(f"{tag}: unknown named weight {name!r} (use te=, unet= or w=)")
        else:
            positional.append(_number(value_text, tag))
    if len(positional) > 3:
        raise ValueError(f"{tag}: too many weights")
    if positional:
        weight = positional[0]
    if len(positional) >= 2:  # A1111: <lora:name:te:unet>
        te = positional[0] if te is None else te
        unet = positional[1] if unet is None else unet
    return LoraReference(alias=alias, weight=weight, te_weight=te, unet_weight=unet, schedule=schedule, text=tag)


def parse_prompt(prompt: str) -> tuple[str, list[LoraReference]]:
    """Strip every ``<lora:...>`` tag from ``prompt``; return the cleaned prompt and the tags in order."""
    references = [parse_tag(match.group(1)) for match in _TAG.finditer(prompt)]
    cleaned = _TAG.sub(" ", prompt)
    cleaned = re.sub(r"\s+", " ", cleaned)
    cleaned = re.sub(r"\s+([,.;])", r"\1", cleaned)
    cleaned = re.sub(r"([,;])(\s*[,;])+", r"\1", cleaned)
    cleaned = cleaned.strip().strip(",;").strip()
    return cleaned, references
