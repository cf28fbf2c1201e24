"""The Generate tab: prompt and settings, the adapter table (auto plan + manual picks), the gated schedule editor,
the gallery (each image captioned with its seed and adapters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.web.adapter_table import DATATYPES, HEADERS, manual_rows, rows_from_table, table_from_rows
from app.web.errors import user_errors
from app.web.schedule_editor import build_schedule_editor, default_text, fusion_options, wire_schedule_editor
from app.web.services import AdapterRow, GenerateRequest, MedleyServices

if TYPE_CHECKING:
    from pipeline import RenderOutcome

GenerateOutputs = tuple[list[tuple[str, str]], list[dict[str, Any]], str, list[list[Any]], str]


@dataclass
class GenerateTab:
    prompt: gr.Textbox
    picker: gr.Dropdown


def _with_plan(services: MedleyServices, prompt: str, rows: list[AdapterRow], batch: int) -> list[AdapterRow]:
    """Manual rows plus a fresh auto plan for ``prompt``."""
    return manual_rows(rows) + services.plan_rows(prompt, batch=batch) if prompt.strip() else manual_rows(rows)


def caption(seed: int, adapters: list[dict[str, Any]]) -> str:
    """A gallery caption: the image's seed and the adapters it was composed with."""
    used = ", ".join(f"{adapter['name']} {adapter['weight']:g}" for adapter in adapters)
    return f"seed {seed} · {used or 'no adapters'}"


def shown_prompt(prompts: list[str]) -> str:
    """The prompt the base was given; one line per image when the images of a batch differ."""
    if len(set(prompts)) <= 1:
        return prompts[0] if prompts else ""
    return "\n".join(f"[{index}] {prompt}" for index, prompt in enumerate(prompts))


def notices_text(notices: list[str]) -> str:
    """What the user should know about the result (e.g. words the base cannot draw), as Markdown lines."""
    return "\n".join(f"- {notice}" for notice in notices)


def save_outcome(services: MedleyServices, request: GenerateRequest, outcome: RenderOutcome
                 ) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Write each image as a PNG with its provenance; the gallery items and the JSON records."""
    from pipeline import save_outcome as save_images

    paths = save_images(outcome.images, outcome.provenance, services.outputs_dir())
    items: list[tuple[str, str]] = []
    records: list[dict[str, Any]] = []  # no "path" keys: gradio_client would take them for files
    for path, record, specs in zip(paths, outcome.provenance, outcome.adapters, strict=True):
        items.append((str(path), caption(record.seed, specs)))
        records.append({"file": str(path), **record.to_dict(), "fusion": request.fusion,
                        "fusion_options": outcome.fusion_options, "adapter_specs": specs})
    return items, records


def make_generate(services: MedleyServices):  # type: ignore[no-untyped-def]
    """The /generate handler (the Generate button and the API share it)."""

    def generate(prompt: str, negative_prompt: str | None = None, seed: float | None = None,
                 steps: float | None = None, cfg: float | None = None, batch: float | None = None,
                 auto_adapters: bool | None = None, adapters: Any = None, fusion: str | None = None,
                 content_curve: str | None = None, style_curve: str | None = None,
                 uncond_content: float | None = None, uncond_style: float | None = None,
                 progress: gr.Progress = gr.Progress()) -> GenerateOutputs:
        """Render ``batch`` images (image i uses seed+i) with the adapters of the table and the prompt's
        <lora:alias:w> tags. With auto_adapters the composer's plan is added when the table has none; in a
        batch each image uses its own plan (its subset of the auto rows). With fusion "gated" the content
        and style curves ("fraction=weight, ..." points) schedule each role's weight over the steps, and
        uncond_content / uncond_style (0..1) set each role's weight in the unconditional half of guidance.
        Defaults: seed 0, 20 steps, the base's CFG, batch 1, fusion merge, the gated method's curves and gains."""
        batch = 1 if batch is None else batch
        with user_errors():
            rows = rows_from_table(adapters)
            if auto_adapters and not any(row.source == "auto" for row in rows):
                rows = _with_plan(services, prompt, rows, int(batch))
            curves = [default_text(role) if text is None else text
                      for role, text in (("content", content_curve), ("style", style_curve))]
            request = GenerateRequest(prompt=prompt or "", negative_prompt=negative_prompt or "",
                                      seed=int(seed or 0), steps=int(20 if steps is None else steps),
                                      guidance=None if cfg is None else float(cfg),
                                      batch=int(batch), rows=rows, fusion=fusion or "merge",
                                      fusion_options=fusion_options(fusion, *curves, uncond_content,
                                                                    uncond_style))
            progress((0, request.steps), desc="denoising", unit="steps")
            outcome = services.generate(
                request, on_step=lambda step, total: progress((step, total), desc="denoising", unit="steps"))
        items, records = save_outcome(services, request, outcome)
        return items, records, shown_prompt(outcome.prompts), table_from_rows(rows), notices_text(outcome.notices)

    return generate


def build_generate_tab(services: MedleyServices, concurrency_limit: int = 1) -> GenerateTab:
    from fusion import FUSION_METHODS

    base = services.base
    names = services.names()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                                placeholder="a red circle on a blue background   (add adapters with <lora:name:0.8>)")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                steps = gr.Slider(label="Steps", minimum=1, maximum=services.config.max_steps, step=1, value=20,
                                  elem_id="steps")
                cfg = gr.Slider(label="CFG scale", minimum=0.0, maximum=20.0, step=0.5, value=base.default_guidance)
                batch = gr.Slider(label="Batch size", minimum=1, maximum=services.config.max_batch, step=1, value=1,
                                  elem_id="batch")
            with gr.Row():
                fusion = gr.Dropdown(label="Fusion method", choices=list(FUSION_METHODS), value="merge",
                                     elem_id="fusion-method")
                auto = gr.Checkbox(label="Auto adapters (compose a plan from the library)", value=False,
                                   elem_id="auto-adapters")
            schedule = build_schedule_editor(steps.value)
            with gr.Row():
                picker = gr.Dropdown(label="Add an adapter", choices=names, value=None, allow_custom_value=False)
                pick_weight = gr.Slider(label="Weight", minimum=-2.0, maximum=2.0, step=0.05, value=0.8)
                add = gr.Button("Add", size="sm")
                plan_button = gr.Button("Compose plan", size="sm")
            table = gr.Dataframe(label="Adapters (edit weights, untick 'use' to drop one)", headers=HEADERS,
                                 datatype=DATATYPES, type="array", interactive=True, value=[],
                                 column_count=len(HEADERS), wrap=True, elem_id="adapter-table")
            run = gr.Button("Generate", variant="primary", elem_id="generate-button")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Images", columns=2, height=500, format="png", object_fit="contain",
                                 elem_id="gallery")
            final_prompt = gr.Textbox(label="Prompt given to the base", interactive=False, elem_id="final-prompt")
            notes = gr.Markdown(elem_id="notices")
            with gr.Accordion("Provenance (JSON)", open=False):
                provenance = gr.JSON(label="Provenance")

    def plan(prompt_text: str, adapters: Any = None, batch_size: float | None = None) -> list[list[Any]]:
        """The composer's plan (concepts -> adapters, weights, reasons) for the prompt, plus manual rows."""
        with user_errors():
            return table_from_rows(_with_plan(services, prompt_text or "", rows_from_table(adapters),
                                              int(batch_size or 1)))

    def add_row(name: str | None, weight: float, adapters: Any) -> list[list[Any]]:
        rows = rows_from_table(adapters)
        if name:
            rows = [row for row in rows if row.name != name] + [AdapterRow(name=name, weight=float(weight))]
        return table_from_rows(rows)

    def drop_auto(adapters: Any) -> list[list[Any]]:
        return table_from_rows(manual_rows(rows_from_table(adapters)))

    def plan_if_auto(prompt_text: str, enabled: bool, adapters: Any, batch_size: float) -> list[list[Any]]:
        return plan(prompt_text, adapters, batch_size) if enabled else drop_auto(adapters)

    wire_schedule_editor(schedule, fusion, steps)
    inputs = [prompt, negative, seed, steps, cfg, batch, auto, table, fusion, schedule.content, schedule.style,
              schedule.uncond_content, schedule.uncond_style]
    outputs = [gallery, provenance, final_prompt, table, notes]
    handler = make_generate(services)
    run.click(handler, inputs, outputs, api_name="generate", concurrency_limit=concurrency_limit,
              concurrency_id="generate")
    prompt.submit(handler, inputs, outputs, api_visibility="private", concurrency_limit=concurrency_limit,
                  concurrency_id="generate")
    plan_button.click(plan, [prompt, table, batch], table, api_name="plan")
    auto.input(plan_if_auto, [prompt, auto, table, batch], table, api_visibility="private")
    prompt.input(drop_auto, table, table, api_visibility="private", queue=False, show_progress="hidden")
    add.click(add_row, [picker, pick_weight, table], table, api_visibility="private", queue=False)
    return GenerateTab(prompt=prompt, picker=picker)
