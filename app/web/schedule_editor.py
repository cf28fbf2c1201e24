"""The gated fusion schedule editor of the Generate tab: a curve per role, plotted over the steps.

The gated method (:mod:`fusion.methods.gated`) weights each adapter by its role's curve over the
fraction of sampling done. Here a curve is written in the text form of :mod:`fusion.schedule`
(``0=1, 0.6=1, 1=0.6``: fraction=weight points, linearly interpolated; ``50%`` and windows such
as ``0.2-0.6`` work too); an empty field means no curve (weight 1 throughout). The edited curves
reach the method as its ``content_curve=`` / ``style_curve=`` options. Two numbers set each role's
weight in the unconditional half of guidance (:mod:`fusion.guidance`; 0: the guidance amplifies
the adapter, 1: the loaders' plain behaviour); they reach the method as ``uncond=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from app.web.services import WebInputError
from fusion.methods.gated import DEFAULT_CURVES, DEFAULT_UNCOND
from fusion.schedule import Schedule, as_schedule

GATED = "gated"
ROLES: tuple[str, ...] = ("content", "style")
HELP = "fraction=weight points, e.g. 0=1, 0.6=1, 1=0.6 (fraction 0: the first, noisiest step; 1: the last)"
UNCOND_HELP = "the role's weight in the unconditional half of CFG: 0 = guidance amplifies it, 1 = plain"


def default_text(role: str) -> str:
    """The gated method's default curve for ``role`` in its text form."""
    schedule = as_schedule(DEFAULT_CURVES[role])
    return "" if schedule is None else schedule.to_text()


def parse_curve(role: str, text: str | None) -> Schedule | None:
    """A role's curve from its text form; None for an empty field. Bad text -> :class:`WebInputError`."""
    cleaned = ",".join(part.strip() for part in (text or "").split(",") if part.strip())
    if not cleaned:
        return None
    try:
        return Schedule.parse(cleaned)
    except ValueError as error:
        raise WebInputError(f"{role} curve {text!r}: {error}") from None


def gated_options(content: str | None, style: str | None) -> dict[str, str | None]:
    """The gated method's curve options (``content_curve`` / ``style_curve``) from the two fields."""
    options: dict[str, str | None] = {}
    for role, text in zip(ROLES, (content, style), strict=True):
        schedule = parse_curve(role, text)
        options[f"{role}_curve"] = None if schedule is None else schedule.to_text()
    return options


def uncond_options(content: float | None, style: float | None) -> dict[str, float]:
    """``uncond`` gains from the two fields (a field left empty keeps the method's default for its role)."""
    gains = {role: float(value) for role, value in zip(ROLES, (content, style), strict=True) if value is not None}
    for role, value in gains.items():
        if not 0.0 <= value <= 1.0:
            raise WebInputError(f"{role} weight in the unconditional half must lie in 0..1, got {value:g}")
    return gains


def fusion_options(method: str | None, content: str | None, style: str | None,
                   uncond_content: float | None = None, uncond_style: float | None = None) -> dict[str, Any]:
    """Options for ``method``: the edited curves (and guidance gains, when set) for "gated"; none otherwise."""
    if method != GATED:
        return {}
    options: dict[str, Any] = dict(gated_options(content, style))
    gains = uncond_options(uncond_content, uncond_style)
    if gains:
        options["uncond"] = {**DEFAULT_UNCOND, **gains}
    return options


def curve_frame(content: str | None, style: str | None, steps: float | None) -> pd.DataFrame:
    """Each role's weight at every denoising step (step i runs at fraction (i - 1) / steps)."""
    count = max(1, int(steps or 1))
    rows: list[tuple[int, float, str]] = []
    for role, text in zip(ROLES, (content, style), strict=True):
        schedule = parse_curve(role, text)
        for step in range(1, count + 1):
            fraction = (step - 1) / count
            rows.append((step, 1.0 if schedule is None else round(schedule(fraction), 4), role))
    return pd.DataFrame(rows, columns=["step", "weight", "role"])


@dataclass
class ScheduleEditor:
    group: gr.Accordion
    content: gr.Textbox
    style: gr.Textbox
    uncond_content: gr.Number
    uncond_style: gr.Number
    plot: gr.LinePlot


def build_schedule_editor(steps: float) -> ScheduleEditor:
    """The editor, hidden until the fusion method is "gated"."""
    with gr.Accordion("Gated schedule: each role's weight over the denoising steps", open=True, visible=False,
                      elem_id="gated-schedule") as group:
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                content = gr.Textbox(label="Content curve", value=default_text("content"), info=HELP,
                                     elem_id="content-curve")
                style = gr.Textbox(label="Style curve", value=default_text("style"), elem_id="style-curve")
                with gr.Row():
                    uncond_content = gr.Number(label="Content, unconditional half", value=DEFAULT_UNCOND["content"],
                                               minimum=0, maximum=1, step=0.05, info=UNCOND_HELP,
                                               elem_id="uncond-content")
                    uncond_style = gr.Number(label="Style, unconditional half", value=DEFAULT_UNCOND["style"],
                                             minimum=0, maximum=1, step=0.05, elem_id="uncond-style")
                reset = gr.Button("Reset to the defaults", size="sm")
            with gr.Column(scale=3):
                plot = gr.LinePlot(curve_frame(content.value, style.value, steps), x="step", y="weight",
                                   color="role", title="Adapter weight per step", height=240,
                                   elem_id="schedule-plot")
    reset.click(lambda: (default_text("content"), default_text("style"), DEFAULT_UNCOND["content"],
                         DEFAULT_UNCOND["style"]), None, [content, style, uncond_content, uncond_style],
                api_visibility="private", queue=False)
    return ScheduleEditor(group=group, content=content, style=style, uncond_content=uncond_content,
                          uncond_style=uncond_style, plot=plot)


def wire_schedule_editor(editor: ScheduleEditor, fusion: gr.Dropdown, steps: gr.Slider) -> None:
    """Show the editor for "gated"; redraw the plot as a curve or the step count changes (quietly while
    typing, with a warning when a field with bad text is left or submitted)."""

    def redraw(content: str, style: str, count: float) -> Any:
        try:
            return curve_frame(content, style, count)
        except WebInputError:
            return gr.skip()

    def redraw_or_warn(content: str, style: str, count: float) -> Any:
        try:
            return curve_frame(content, style, count)
        except WebInputError as error:
            gr.Warning(str(error))
            return gr.skip()

    def toggle(method: str) -> gr.Accordion:
        return gr.Accordion(visible=method == GATED)

    fusion.change(toggle, fusion, editor.group, api_visibility="private", queue=False)
    inputs = [editor.content, editor.style, steps]
    for handler, triggers in ((redraw, (editor.content.change, editor.style.change, steps.change)),
                              (redraw_or_warn, (editor.content.blur, editor.content.submit, editor.style.blur,
                                                editor.style.submit))):
        for trigger in triggers:
            trigger(handler, inputs, editor.plot, api_visibility="private", queue=False, show_progress="hidden")
