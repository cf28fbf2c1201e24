"""The Generate tab: prompt and settings, the adapter table (auto plan + manual picks), the gallery."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.web.adapter_table import DATATYPES, HEADERS, manual_rows, rows_from_table, table_from_rows
from app.web.errors import user_errors
from app.web.services import AdapterRow, GenerateRequest, MedleyServices


@dataclass
class GenerateTab:
    prompt: gr.Textbox
    picker: gr.Dropdown


def _with_plan(services: MedleyServices, prompt: str, rows: list[AdapterRow], batch: int) -> list[AdapterRow]:
    """Manual rows plus a fresh auto plan for ``prompt``."""
    return manual_rows(rows) + services.plan_rows(prompt, batch=batch) if prompt.strip() else manual_rows(rows)


def make_generate(services: MedleyServices):  # type: ignore[no-untyped-def]
    """The /generate handler (the Generate button and the API share it)."""

    def generate(prompt: str, negative_prompt: str | None = None, seed: float | None = None,
                 steps: float | None = None, cfg: float | None = None, batch: float | None = None,
                 auto_adapters: bool | None = None, adapters: Any = None, fusion: str | None = None,
                 progress: gr.Progress = gr.Progress()
                 ) -> tuple[list[tuple[str, str]], list[dict[str, Any]], str, list[list[Any]]]:
        """Render ``batch`` images (image i uses seed+i) with the adapters of the table and the prompt's
        <lora:alias:w> tags. With auto_adapters the composer's plan is added when the table has none.
        Defaults: seed 0, 20 steps, the base's CFG, batch 1, fusion merge."""
        batch = 1 if batch is None else batch
        from pipeline import save_png

        with user_errors():
            rows = rows_from_table(adapters)
            if auto_adapters and not any(row.source == "auto" for row in rows):
                rows = _with_plan(services, prompt, rows, int(batch))
            request = GenerateRequest(prompt=prompt or "", negative_prompt=negative_prompt or "",
                                      seed=int(seed or 0), steps=int(20 if steps is None else steps),
                                      guidance=None if cfg is None else float(cfg),
                                      batch=int(batch), rows=rows, fusion=fusion or "merge")
            progress((0, request.steps), desc="denoising", unit="steps")
            outcome = services.generate(
                request, on_step=lambda step, total: progress((step, total), desc="denoising", unit="steps"))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = services.outputs_dir()
        items: list[tuple[str, str]] = []
        records: list[dict[str, Any]] = []  # no "path" keys: gradio_client would take them for files
        for index, (image, record) in enumerate(zip(outcome.result.images, outcome.result.provenance, strict=True)):
            path = save_png(image, record, folder / f"{stamp}-{record.seed}-{index}-{time.time_ns() % 10**6}.png")
            items.append((str(path), f"seed {record.seed}"))
            records.append({"file": str(path), **record.to_dict(), "fusion": request.fusion,
                            "adapter_specs": outcome.adapters})
        return items, records, outcome.prompt, table_from_rows(rows)

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
                steps = gr.Slider(label="Steps", minimum=1, maximum=services.config.max_steps, step=1, value=20)
                cfg = gr.Slider(label="CFG scale", minimum=0.0, maximum=20.0, step=0.5, value=base.default_guidance)
                batch = gr.Slider(label="Batch size", minimum=1, maximum=services.config.max_batch, step=1, value=1)
            with gr.Row():
                fusion = gr.Dropdown(label="Fusion method", choices=list(FUSION_METHODS), value="merge")
                auto = gr.Checkbox(label="Auto adapters (compose a plan from the library)", value=False)
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
            gallery = gr.Gallery(label="Images", columns=2, height=420, format="png", object_fit="contain",
                                 elem_id="gallery")
            final_prompt = gr.Textbox(label="Prompt given to the base", interactive=False)
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

    inputs = [prompt, negative, seed, steps, cfg, batch, auto, table, fusion]
    outputs = [gallery, provenance, final_prompt, table]
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
