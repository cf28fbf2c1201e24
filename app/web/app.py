"""The Gradio Blocks app: Generate, Library and Train tabs over one :class:`MedleyServices`.

Stable API names (``gradio_client``): /generate, /plan, /search, /library_list,
/import_adapter, /train, /status. Generation is queued with a concurrency limit (one at a time by
default: the base is shared and the CPU is small); nothing is fetched from the internet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry

import gradio as gr  # noqa: E402

from app.web.generate_tab import build_generate_tab  # noqa: E402
from app.web.library_tab import build_library_tab  # noqa: E402
from app.web.services import MedleyServices  # noqa: E402
from app.web.train_tab import build_train_tab  # noqa: E402
from app.web.training_jobs import TrainingJobs  # noqa: E402

TITLE = "Medley"
# System fonts only: the default theme would ask a font CDN for its web fonts.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
LAUNCH_ATTEMPTS = 3
CSS = "#gallery img, #library-cards img, #train-samples img { image-rendering: pixelated; }"
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def offline_theme() -> gr.themes.Base:
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


@dataclass
class LaunchOptions:
    host: str = "127.0.0.1"
    port: int | None = 7860
    auth: tuple[str, str] | None = None
    generation_concurrency: int = 1
    max_file_size: str = "2gb"
    prevent_thread_lock: bool = False
    quiet: bool = False


def build_app(services: MedleyServices, generation_concurrency: int = 1) -> gr.Blocks:
    jobs = TrainingJobs(services)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown("## Medley · find, compose and train LoRA adapters")
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                generate = build_generate_tab(services, concurrency_limit=generation_concurrency)
            with gr.Tab("Library", id="library", elem_id="tab-library") as library_tab:
                library = build_library_tab(services, generate.prompt, tabs)
            with gr.Tab("Train", id="train", elem_id="tab-train"):
                train = build_train_tab(services, jobs)
        with gr.Accordion("Server status (base, adapter cache, batching)", open=False):
            status = gr.JSON(label="Status", elem_id="server-status")
            gr.Button("Refresh", size="sm").click(services.status, None, status, api_name="status")

        def refresh_cards(query: str, base: str, kind: str) -> tuple[Any, Any, Any]:
            """The Library grid for the current search and filters, and fresh picker choices."""
            found, records = library.search(query, base, kind)
            return found, records, gr.Dropdown(choices=services.names())

        refresh_inputs = [library.query, library.base_filter, library.kind_filter]
        refresh_outputs = [library.cards, library.listing, generate.picker]
        library_tab.select(refresh_cards, refresh_inputs, refresh_outputs, api_visibility="private")
        train.start_event.then(refresh_cards, refresh_inputs, refresh_outputs, api_visibility="private")
        app.load(refresh_cards, refresh_inputs, refresh_outputs, api_visibility="private")
    app.medley_jobs = jobs  # type: ignore[attr-defined]  # tests and the CLI reach the training jobs here
    return app


def launch(services: MedleyServices, options: LaunchOptions) -> tuple[gr.Blocks, str]:
    """Build, queue and start the app; returns it and its local URL."""
    app = build_app(services, options.generation_concurrency)
    app.queue(default_concurrency_limit=1, max_size=256)
    for attempt in range(LAUNCH_ATTEMPTS):
        try:
            return app, _launch_once(app, services, options)
        except ValueError as error:  # gradio's own check of the local URL timed out (a busy CPU)
            app.close()
            if "localhost is not accessible" not in str(error) or attempt == LAUNCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _launch_once(app: gr.Blocks, services: MedleyServices, options: LaunchOptions) -> str:
    _, url, _ = app.launch(
        server_name=options.host,
        server_port=options.port,
        auth=options.auth,
        share=False,
        prevent_thread_lock=options.prevent_thread_lock,
        max_file_size=options.max_file_size,
        allowed_paths=[str(services.outputs_dir())],
        show_error=True,
        quiet=options.quiet,
        ssr_mode=False,
        mcp_server=False,
        footer_links=["api"],
        theme=offline_theme(),
        css=CSS,
        inbrowser=False,
    )
    return str(url)
