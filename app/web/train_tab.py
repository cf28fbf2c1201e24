"""The Train tab: images (uploaded or a toy-world concept), options, start/stop, live loss and samples."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from app.web.errors import user_errors
from app.web.services import MedleyServices
from app.web.training_jobs import B4M_ROLES, JobState, TrainingJobs, TrainRequest, concept_choices
from library.records import KINDS

POLL_SECONDS = 1.0
TrainOutputs = tuple[str, pd.DataFrame, list[tuple[Any, str]], dict[str, Any]]


@dataclass
class TrainTab:
    start_event: Any  # the Start button's event, for chaining a Library refresh


def _concept_of(choice: str | None) -> str:
    """'heart (hartok, content)' -> 'heart'."""
    return (choice or "").split(" (")[0].strip()


def _outputs(state: JobState) -> TrainOutputs:
    losses = pd.DataFrame(state.losses, columns=["step", "loss"])
    head = f"**{html.escape(state.status)}** · step {state.step}/{state.total}"
    if state.seconds_per_step and state.running:
        head += f" · {state.seconds_per_step:.2f} s/step"
    return f"{head}  \n{html.escape(state.message)}", losses, list(state.samples), state.summary()


def make_train(services: MedleyServices, jobs: TrainingJobs):  # type: ignore[no-untyped-def]
    def train(images: list[str] | None = None, concept: str | None = None, trigger: str | None = None,
              class_prompt: str | None = None, name: str | None = None, steps: float | None = None,
              rank: float | None = None, prior_preservation: bool | None = None, cat: bool | None = None,
              b4m_role: str | None = None, kind: str | None = None) -> Iterator[TrainOutputs]:
        """Train a LoRA (DreamBooth-style) on uploaded images or a toy-world concept and add it to the
        library; yields progress until the run ends. Defaults: 200 steps, rank 4."""
        steps = 200 if steps is None else steps
        request = TrainRequest(name=(name or "").strip(), trigger=(trigger or "").strip(),
                               class_prompt=class_prompt or "", images=list(images or []),
                               concept=_concept_of(concept), steps=int(steps), rank=int(rank or 4),
                               prior_preservation=bool(prior_preservation), cat=bool(cat),
                               b4m_role=b4m_role or "none", kind=kind or "content",
                               sample_every=max(1, int(steps) // 4))
        with user_errors():
            state = jobs.start(request)
        while state.running:
            yield _outputs(state)
            time.sleep(POLL_SECONDS)
        yield _outputs(state)
        if state.status == "failed":
            raise gr.Error(html.escape(state.message))

    return train


def build_train_tab(services: MedleyServices, jobs: TrainingJobs) -> TrainTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            images = gr.File(label="Training images", file_count="multiple", type="filepath",
                             file_types=["image"])
            concept = gr.Dropdown(label="...or a toy-world concept to export", choices=["", *concept_choices()],
                                  value="")
            with gr.Row():
                trigger = gr.Textbox(label="Trigger word", placeholder="e.g. zorbl")
                name = gr.Textbox(label="Adapter name", placeholder="e.g. my-shape")
            class_prompt = gr.Textbox(label="Class prompt", placeholder="e.g. a shape")
            with gr.Row():
                steps = gr.Slider(label="Steps", minimum=1, maximum=2000, step=1, value=200)
                rank = gr.Slider(label="Rank", minimum=1, maximum=64, step=1, value=4)
            with gr.Row():
                prior = gr.Checkbox(label="Prior preservation", value=False)
                cat = gr.Checkbox(label="CAT (contrastive adapter training)", value=False)
            with gr.Row():
                b4m = gr.Radio(label="Break-for-Make role", choices=list(B4M_ROLES), value="none")
                kind = gr.Dropdown(label="Kind in the library", choices=list(KINDS), value="content")
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="train-start")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column(scale=3):
            status = gr.Markdown("No training run yet.")
            losses = gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss", title="Loss",
                                 height=260)
            samples = gr.Gallery(label="Samples", columns=4, height=200, format="png", object_fit="contain",
                                 elem_id="train-samples")
            summary = gr.JSON(label="Run", visible="hidden")

    def fill_from_concept(choice: str) -> tuple[str, str, str, str]:
        from toyworld.vocab import novel_concept

        if not choice:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # type: ignore[return-value]
        concept_value = novel_concept(_concept_of(choice))
        class_word = {"content": "a shape", "style": "a shape", "palette": "a shape"}[concept_value.kind]
        kind_value = "content" if concept_value.kind == "content" else "style"
        return concept_value.trigger, f"web-{concept_value.name}", class_word, kind_value

    def stop_run() -> str:
        jobs.stop()
        return "Stopping after the current step..."

    concept.input(fill_from_concept, concept, [trigger, name, class_prompt, kind], api_visibility="private")
    event = start.click(make_train(services, jobs),
                        [images, concept, trigger, class_prompt, name, steps, rank, prior, cat, b4m, kind],
                        [status, losses, samples, summary], api_name="train", concurrency_limit=1,
                        concurrency_id="train")
    stop.click(stop_run, None, status, api_visibility="private", queue=False)
    return TrainTab(start_event=event)
