"""The Library tab: card grid, semantic search and filters, detail view and edits, import and scan."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.web import cards
from app.web.errors import user_errors
from app.web.services import MedleyServices, append_tag
from library.records import BASES, KINDS

ANY = "any"
REFUSAL_HEADERS = ("file", "reason")
CardOutputs = tuple[list[tuple[Any, str]], list[dict[str, Any]]]


@dataclass
class LibraryTab:
    query: gr.Textbox
    search: Any  # the /search handler (query, base, kind) -> cards, records
    cards: gr.Gallery
    listing: gr.JSON
    base_filter: gr.Dropdown
    kind_filter: gr.Dropdown


def scan_refusals(report: Any) -> list[list[str]]:
    """The refusal table shown after a scan: one [file, reason] row per refused file."""
    from library.refusals import refusal_rows

    return [[path, reason] for path, reason in refusal_rows(report.folder, report.problems)]


def _split_triggers(text: str) -> list[str]:
    return [word.strip() for word in (text or "").split(",") if word.strip()]


def make_library_handlers(services: MedleyServices) -> dict[str, Any]:
    """The Library handlers that are also API endpoints (/library_list, /search, /import_adapter)."""

    def library_list(base: str | None = None, kind: str | None = None) -> CardOutputs:
        """Every catalogued adapter (optionally of one base and kind): cards and their records."""
        with user_errors():
            records = services.records(base=base, kind=kind)
        return cards.gallery_items(records), [cards.summary(r) for r in records]

    def search(query: str, base: str | None = None, kind: str | None = None) -> CardOutputs:
        """Semantic search over the library (best first); an empty query lists everything."""
        if not (query or "").strip():
            return library_list(base, kind)
        with user_errors():
            hits = services.search(query, k=24, base=base, kind=kind)
            records = [services.catalog.get(hit.id) for hit in hits]
        results = [{**cards.summary(record), "score": round(hit.score, 4), "similarity": round(hit.similarity, 4),
                    "reasons": list(hit.reasons)} for hit, record in zip(hits, records, strict=True)]
        return cards.gallery_items(records), results

    def import_adapter(file: str | None, name: str | None = None, kind: str | None = None
                       ) -> tuple[str, dict[str, Any]]:
        """Import an uploaded .safetensors LoRA into MEDLEY_HOME/adapters (never modified)."""
        if not file:
            raise gr.Error("choose a .safetensors file first")
        with user_errors():
            record = services.import_upload(file, name=name, kind=None if kind in (None, "", ANY) else kind)
        return f"Imported **{html.escape(record.name)}** ({record.base}, {record.kind}, rank {record.rank}).", \
            cards.summary(record)

    return {"library_list": library_list, "search": search, "import_adapter": import_adapter}


def build_library_tab(services: MedleyServices, prompt: gr.Textbox, tabs: gr.Tabs) -> LibraryTab:
    handlers = make_library_handlers(services)
    with gr.Row():
        query = gr.Textbox(label="Search", placeholder="describe what you want, e.g. 'heart shape'", scale=4,
                           elem_id="library-search")
        base_filter = gr.Dropdown(label="Base", choices=[ANY, *BASES], value=ANY, scale=1)
        kind_filter = gr.Dropdown(label="Kind", choices=[ANY, *KINDS], value=ANY, scale=1)
        search_button = gr.Button("Search", scale=1, elem_id="library-search-button")
        refresh = gr.Button("Show all", scale=1)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            grid = gr.Gallery(label="Adapters", columns=4, height=460, allow_preview=False, format="png",
                              object_fit="contain", elem_id="library-cards")
            listing = gr.JSON(visible="hidden", label="records")
        with gr.Column(scale=2):
            selected = gr.Textbox(label="Selected adapter", interactive=False, elem_id="library-selected")
            details = gr.JSON(label="Metadata")
            title = gr.Textbox(label="Title")
            description = gr.Textbox(label="Description", lines=3)
            triggers = gr.Textbox(label="Trigger words (comma separated)")
            with gr.Row():
                weight = gr.Number(label="Preferred weight", value=0.8)
                kind = gr.Dropdown(label="Kind", choices=list(KINDS), value="other")
            notes = gr.Textbox(label="Notes", lines=2)
            with gr.Row():
                save = gr.Button("Save changes")
                use = gr.Button("Use in prompt", variant="primary")
            status = gr.Markdown()
    with gr.Accordion("Import a LoRA file (.safetensors)", open=False):
        with gr.Row():
            upload = gr.File(label="LoRA file", file_types=[".safetensors"], type="filepath")
            with gr.Column():
                import_name = gr.Textbox(label="Name (optional)")
                import_kind = gr.Dropdown(label="Kind", choices=[ANY, *KINDS], value=ANY)
                import_button = gr.Button("Import")
        import_status = gr.Markdown()
        imported = gr.JSON(visible="hidden")
    with gr.Accordion("Scan a folder on this machine", open=False):
        with gr.Row():
            folder = gr.Textbox(label="Folder", placeholder="/path/to/loras", scale=4)
            scan_button = gr.Button("Scan", scale=1)
        scan_status = gr.Markdown()
        refusals = gr.Dataframe(headers=list(REFUSAL_HEADERS), datatype=["str", "str"], label="Refused files",
                                interactive=False, wrap=True, visible=False, elem_id="library-refusals")

    def show(records: list[dict[str, Any]] | None, evt: gr.SelectData) -> tuple[Any, ...]:
        if not records or evt.index is None or not 0 <= int(evt.index) < len(records):
            raise gr.Error("pick an adapter card")
        with user_errors():
            record = services.catalog.get(records[int(evt.index)]["name"])
        return (record.name, cards.detail(record), record.title, record.description, ", ".join(record.triggers),
                record.preferred_weight, record.kind, record.notes, "")

    def save_edits(name: str, title_text: str, description_text: str, trigger_text: str, preferred: float,
                   kind_value: str, notes_text: str) -> tuple[dict[str, Any], str]:
        if not name:
            raise gr.Error("pick an adapter card first")
        with user_errors():
            record = services.edit(name, title=title_text, description=description_text,
                                   triggers=_split_triggers(trigger_text), preferred_weight=preferred,
                                   kind=kind_value, notes=notes_text)
        return cards.detail(record), f"Saved **{html.escape(record.name)}**."

    def use_in_prompt(name: str, preferred: float, current: str) -> tuple[str, Any]:
        if not name:
            raise gr.Error("pick an adapter card first")
        return append_tag(current, name, float(preferred if preferred is not None else 0.8)), \
            gr.Tabs(selected="generate")

    def scan(path: str, progress: gr.Progress = gr.Progress()) -> tuple[str, Any]:
        with user_errors():
            report = services.scan(path, progress=lambda done, total, _p: progress((done, total), desc="scanning",
                                                                                   unit="files"))
        text = (f"{html.escape(report.folder)}: {len(report.added)} added, {len(report.updated)} updated, "
                f"{report.unchanged} unchanged, {len(report.removed)} removed, {len(report.duplicates)} duplicates, "
                f"{len(report.problems)} refused ({report.seconds:.1f}s)")
        rows = scan_refusals(report)
        return text, gr.Dataframe(value=rows, visible=bool(rows))

    card_outputs = [grid, listing]
    filters = [base_filter, kind_filter]
    search_button.click(handlers["search"], [query, *filters], card_outputs, api_name="search")
    query.submit(handlers["search"], [query, *filters], card_outputs, api_visibility="private")
    refresh.click(handlers["library_list"], filters, card_outputs, api_name="library_list").then(
        lambda: "", None, query, api_visibility="private", queue=False)
    for dropdown in filters:
        dropdown.input(handlers["search"], [query, *filters], card_outputs, api_visibility="private")
    grid.select(show, listing, [selected, details, title, description, triggers, weight, kind, notes, status],
                api_visibility="private")
    save.click(save_edits, [selected, title, description, triggers, weight, kind, notes], [details, status],
               api_visibility="private").then(handlers["search"], [query, *filters], card_outputs,
                                              api_visibility="private")
    use.click(use_in_prompt, [selected, weight, prompt], [prompt, tabs], api_visibility="private")
    import_button.click(handlers["import_adapter"], [upload, import_name, import_kind], [import_status, imported],
                        api_name="import_adapter").success(handlers["library_list"], filters, card_outputs,
                                                           api_visibility="private")
    scan_button.click(scan, folder, [scan_status, refusals], api_visibility="private").then(
        handlers["library_list"], filters, card_outputs, api_visibility="private")
    return LibraryTab(query=query, search=handlers["search"], cards=grid, listing=listing,
                      base_filter=base_filter, kind_filter=kind_filter)
