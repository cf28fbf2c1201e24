"""What the web app shares between tabs and requests: the base, the catalogue and the retriever.

Every tab calls the core through :class:`MedleyServices`; the tab modules only translate
between widgets and these calls. Generation is the core render service's
(:class:`pipeline.Studio`): the table rows of the Generate tab become its picks (manual rows
as hand picks, auto rows as the plan's picks as edited), and it serialises renders itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from library.picks import Pick
from library.records import BASES, KINDS, AdapterRecord
from library.vocabulary import ROLES

if TYPE_CHECKING:
    from library.catalog import Catalog, ScanReport
    from pipeline import LoadedBase, RenderOutcome, Studio
    from pipeline.batcher import RenderBatcher
    from retrieval import Plan, Result, Retriever

StepCallback = Callable[[int, int], None]
ScanCallback = Callable[[int, int, str], None]
MAX_UPLOAD_BYTES = 2 * 1024**3
MAX_BATCH = 16
MAX_STEPS = 150


class WebInputError(ValueError):
    """Input the app refuses; the message is shown to the user as it is."""


@dataclass
class WebConfig:
    base: str | None = None  # None: the embedded toy base
    library: Path | None = None  # a folder of adapters scanned at start
    device: str | None = None
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_batch: int = MAX_BATCH
    max_steps: int = MAX_STEPS
    batch_requests: int = 1  # >1: requests arriving together share a UNet pass, up to this many images
    batch_wait_s: float = 0.05  # how long a request waits for others to batch with
    cache_bytes: int | None = None  # adapter cache budget (None: keep every adapter used)


@dataclass
class AdapterRow:
    """One adapter to compose: from the auto plan, the manual picker, or a prompt tag."""

    name: str
    weight: float
    role: str = ""  # "" -> the catalogue kind
    use: bool = True
    source: str = "manual"  # "auto" or "manual"
    concept: str = ""
    reasons: str = ""


@dataclass
class GenerateRequest:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float | None = None
    batch: int = 1
    rows: list[AdapterRow] = field(default_factory=list)
    fusion: str = "merge"
    add_triggers: bool = True
    fusion_options: dict[str, Any] = field(default_factory=dict)  # the method's options (gated: its curves)


def lora_tag(name: str, weight: float) -> str:
    return f"<lora:{name}:{weight:g}>"


def append_tag(prompt: str, name: str, weight: float) -> str:
    tag = lora_tag(name, weight)
    prompt = (prompt or "").rstrip()
    return f"{prompt} {tag}" if prompt else tag


class MedleyServices:
    """The core as the web app uses it. Thread-safe; the base and retriever load on first use.

    ``base`` / ``catalog`` / ``retriever_factory`` may be given (tests, embedding); by default the
    base comes from ``config.base`` and the catalogue from ``MEDLEY_HOME``.
    """

    def __init__(
        self,
        config: WebConfig | None = None,
        *,
        base: LoadedBase | None = None,
        base_factory: Callable[[], LoadedBase] | None = None,
        catalog: Catalog | None = None,
        retriever_factory: Callable[[list[AdapterRecord]], Retriever] | None = None,
    ) -> None:
        from pipeline import Studio

        self.config = config or WebConfig()
        self._base_factory = base_factory
        self.studio: Studio = Studio(base if base is not None else self.new_base, catalog, retriever_factory,
                                     cache_bytes=self.config.cache_bytes)
        self.batcher: RenderBatcher | None = None
        if self.config.batch_requests > 1:
            from pipeline.batcher import RenderBatcher

            self.batcher = RenderBatcher(self.studio, self.config.batch_requests, self.config.batch_wait_s)

    # ------------------------------------------------------------------ shared state

    def new_base(self) -> LoadedBase:
        """A freshly loaded base (training gets its own, so generation is never disturbed)."""
        if self._base_factory is not None:
            return self._base_factory()
        from pipeline import load_base

        return load_base(self.config.base, device=self.config.device)

    @property
    def base(self) -> LoadedBase:
        return self.studio.base

    @property
    def catalog(self) -> Catalog:
        return self.studio.catalog

    def outputs_dir(self) -> Path:
        """Where generated PNGs go: ``<home>/outputs`` of this app's catalogue."""
        folder = self.catalog.home / "outputs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def scan_library_folder(self) -> ScanReport | None:
        """Scan ``config.library`` once at start (in place, incremental)."""
        if self.config.library is None:
            return None
        return self.catalog.scan(Path(self.config.library))

    def retriever(self) -> Retriever:
        """The retriever over the catalogue, synced whenever the catalogue changed."""
        return self.studio.retriever()  # type: ignore[return-value]

    # ------------------------------------------------------------------ library

    def records(self, base: str | None = None, kind: str | None = None) -> list[AdapterRecord]:
        return self.catalog.list(base=_filter(base, BASES, "base"), kind=_filter(kind, KINDS, "kind"))

    def names(self) -> list[str]:
        return [record.name for record in self.catalog.list()]

    def search(self, query: str, k: int = 12, base: str | None = None, kind: str | None = None) -> list[Result]:
        """Semantic search (Retriever.search), then the kind filter; an empty query lists nothing."""
        base, kind = _filter(base, BASES, "base"), _filter(kind, KINDS, "kind")
        if not query.strip():
            return []
        k = max(1, min(int(k), 200))
        hits = self.retriever().search(query, k=k if kind is None else 4 * k, base=base)
        return [hit for hit in hits if kind is None or hit.kind == kind][:k]

    def import_upload(self, path: str | Path, name: str | None = None, kind: str | None = None) -> AdapterRecord:
        """Import an uploaded ``.safetensors`` into MEDLEY_HOME/adapters through the catalogue."""
        source = Path(path)
        if source.suffix.lower() != ".safetensors":
            raise WebInputError(f"{source.name}: only .safetensors files can be imported")
        size = source.stat().st_size
        if size > self.config.max_upload_bytes:
            raise WebInputError(f"{source.name}: {size / 1024**3:.1f} GiB is over the "
                                f"{self.config.max_upload_bytes / 1024**3:g} GiB upload limit")
        return self.catalog.import_file(source, kind=_filter(kind, KINDS, "kind"), name=(name or "").strip() or None)

    def scan(self, folder: str | Path, progress: ScanCallback | None = None) -> ScanReport:
        path = Path(str(folder)).expanduser()
        if not str(folder).strip() or not path.is_dir():
            raise WebInputError(f"{folder!r} is not a folder on the server")
        return self.catalog.scan(path, progress=progress)

    def edit(self, name: str, **changes: object) -> AdapterRecord:
        return self.catalog.edit(name, **changes)

    # ------------------------------------------------------------------ generation

    def plan(self, prompt: str, batch: int = 1, seed: int = 0) -> Plan:
        """The composer's plan for ``prompt`` (its ``<lora:>`` tags removed) on the loaded base."""
        return self.studio.plan(prompt, batch=batch, seed=seed)

    def plan_rows(self, prompt: str, batch: int = 1, seed: int = 0) -> list[AdapterRow]:
        plan = self.plan(prompt, batch=batch, seed=seed)
        return [AdapterRow(name=adapter.name, weight=round(adapter.weight, 3), role=adapter.role, source="auto",
                           concept=concept.text, reasons="; ".join(adapter.reasons))
                for concept in plan.concepts for adapter in concept.adapters]

    def generate(self, request: GenerateRequest, on_step: StepCallback | None = None) -> RenderOutcome:
        """Render the batch through the core (images sharing adapters share one pipeline run)."""
        from library.errors import LibraryError
        from pipeline import RenderRequest

        _check_request(request, self.config)
        render = RenderRequest(
            prompt=request.prompt, negative_prompt=request.negative_prompt, seed=request.seed,
            batch=request.batch, steps=request.steps, guidance=request.guidance, picks=picks_of(request.rows),
            fusion=request.fusion, fusion_options=request.fusion_options, add_triggers=request.add_triggers)
        try:
            if self.batcher is not None:
                return self.batcher.render(render, on_step=on_step)
            return self.studio.render(render, on_step=on_step)
        except (LibraryError, ValueError, LookupError) as error:
            raise WebInputError(str(error)) from None

    def status(self) -> dict[str, Any]:
        """The /status endpoint: the base, the adapter cache and (when batching) the batcher's figures."""
        status = self.studio.status()
        if self.batcher is not None:
            status["batching"] = {**self.batcher.stats.to_dict(), "queued": self.batcher.queued,
                                  "max_batch": self.batcher.max_batch, "max_wait_s": self.batcher.max_wait_s}
        return status


def picks_of(rows: Sequence[AdapterRow]) -> list[Pick]:
    """The table's rows in use as picks: auto rows are the plan's picks as edited, the others hand picks;
    a row's role, when set, overrides the catalogue kind."""
    return [Pick(name=row.name.strip(), weight=float(row.weight), role=row.role if row.role in ROLES else None,
                 source="auto" if row.source == "auto" else "manual")
            for row in rows if row.use and row.name.strip()]


def _check_request(request: GenerateRequest, config: WebConfig) -> None:
    """Refuse a batch / step count out of this app's range (the core checks the method and its options)."""
    if not 1 <= request.batch <= config.max_batch:
        raise WebInputError(f"batch must be between 1 and {config.max_batch}")
    if not 1 <= request.steps <= config.max_steps:
        raise WebInputError(f"steps must be between 1 and {config.max_steps}")


def _filter(value: str | None, allowed: Sequence[str], label: str) -> str | None:
    """"" / "any" / None -> None; otherwise the value, checked."""
    if value is None or value in ("", "any", "all"):
        return None
    if value not in allowed:
        raise WebInputError(f"unknown {label} {value!r} (one of {', '.join(allowed)})")
    return value
