"""The Generate tab's gated schedule editor starts from the gated method's own defaults.

The editor shows curves as text and guidance gains as numbers; the method keeps them as
:class:`~fusion.schedule.Schedule` points and floats. These tests read what the editor shows back
into values and compare them with what ``GatedMethod()`` uses when given no options, so a default
changed on one side only (or repeated by hand and let drift) fails here.
"""

from __future__ import annotations

import gradio as gr
import pytest

from app.web import schedule_editor
from fusion.methods.gated import GatedMethod
from fusion.schedule import Schedule


def _points(schedule: Schedule | None) -> list[tuple[float, float]] | None:
    return None if schedule is None else list(schedule.points)


def _flat(schedule: Schedule) -> list[float]:
    return [number for point in schedule.points for number in point]


def _same_curve(shown: Schedule | None, used: Schedule | None) -> bool:
    if shown is None or used is None:
        return shown is used
    return shown.step == used.step and _flat(shown) == pytest.approx(_flat(used), abs=1e-9)


@pytest.fixture(scope="module")
def method() -> GatedMethod:
    return GatedMethod()  # the defaults a request without gated options gets


@pytest.fixture(scope="module")
def editor() -> schedule_editor.ScheduleEditor:
    with gr.Blocks():
        return schedule_editor.build_schedule_editor(20)


@pytest.mark.parametrize("role", schedule_editor.ROLES)
def test_default_curve_text_parses_to_the_methods_curve(role: str, method: GatedMethod) -> None:
    shown = schedule_editor.parse_curve(role, schedule_editor.default_text(role))
    assert _same_curve(shown, method.curves[role]), (role, _points(shown), _points(method.curves[role]))


def test_built_editor_shows_the_methods_defaults(editor: schedule_editor.ScheduleEditor, method: GatedMethod) -> None:
    for role, box in (("content", editor.content), ("style", editor.style)):
        shown = schedule_editor.parse_curve(role, box.value)
        assert _same_curve(shown, method.curves[role]), (role, box.value)
    assert float(editor.uncond_content.value) == pytest.approx(method.uncond["content"])
    assert float(editor.uncond_style.value) == pytest.approx(method.uncond["style"])


def test_untouched_editor_options_rebuild_the_default_method(method: GatedMethod) -> None:
    """What the editor sends for untouched fields gives the method it started from."""
    options = schedule_editor.fusion_options(
        "gated", schedule_editor.default_text("content"), schedule_editor.default_text("style"),
        method.uncond["content"], method.uncond["style"],
    )
    rebuilt = GatedMethod(**options)
    for role in schedule_editor.ROLES:
        assert _same_curve(rebuilt.curves[role], method.curves[role]), role
    assert rebuilt.uncond == pytest.approx(method.uncond)
    assert rebuilt.options() == method.options()


def test_the_comparison_notices_a_changed_curve(method: GatedMethod) -> None:
    """The check compares values: a curve that differs by one point is caught."""
    moved = schedule_editor.parse_curve("style", "0=0, 0.1=0, 0.35=1, 1=1")
    assert not _same_curve(moved, method.curves["style"])
    same_value_other_spelling = schedule_editor.parse_curve("style", "0=0.0, 10%=0, 30%=1.0, 100%=1")
    assert _same_curve(same_value_other_spelling, method.curves["style"])
