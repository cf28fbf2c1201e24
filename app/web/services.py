"""What the web app shares between tabs and requests: the base, the catalogue and the retriever.

Every tab calls the core through :class:`MedleyServices`; the tab modules only translate
between widgets and these calls. Generation is serialised by a lock: fusion composes
adapters into the one loaded pipeline, so two requests must never overlap on it.

Adapters are resolved by the core (:func:`pipeline.adapters.resolve_adapters`); the table
rows of the Generate tab map onto its picks (manual rows) and planned specs (auto rows).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.web.batch_plans import ImageRun, RowKey, image_runs, rows_key, rows_per_image, uses_auto
from library.records import BASES, KINDS, AdapterRecord

if TYPE_CHECKING:
    from fusion import AdapterSpec
    from library.catalog import Catalog, ScanReport
    from pipeline import GenerationResult, LoadedBase
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


@dataclass
class GenerateOutcome:
    result: GenerationResult  # the whole batch, image i with seed + i
    prompts: list[str]  # per image: what the base was given (tags stripped, trigger words added)
    adapters: list[list[dict[str, Any]]]  # per image: the composed adapters (AdapterSpec.describe())
    fusion_options: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.prompts[0]


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
        self.config = config or WebConfig()
        self._base = base
        self._base_factory = base_factory
        self._catalog = catalog
        self._retriever_factory = retriever_factory
        self._retriever: Retriever | None = None
        self._retriever_revision = -1
        self._load_lock = threading.Lock()
        self._retriever_lock = threading.Lock()
        self.generate_lock = threading.Lock()  # one generation at a time on the shared pipeline

    # ------------------------------------------------------------------ shared state

    def new_base(self) -> LoadedBase:
        """A freshly loaded base (training gets its own, so generation is never disturbed)."""
        if self._base_factory is not None:
            return self._base_factory()
        from pipeline import load_base

        return load_base(self.config.base, device=self.config.device)

    @property
    def base(self) -> LoadedBase:
        with self._load_lock:
            if self._base is None:
                self._base = self.new_base()
            return self._base

    @property
    def catalog(self) -> Catalog:
        with self._load_lock:
            if self._catalog is None:
                from library.catalog import Catalog

                self._catalog = Catalog()
            return self._catalog

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
        with self._retriever_lock:
            revision = self.catalog.revision
            records = self.catalog.list()
            if self._retriever is None:
                if self._retriever_factory is not None:
                    self._retriever = self._retriever_factory(records)
                else:
                    from retrieval import Retriever

                    self._retriever = Retriever(records, home=self.catalog.home)
            elif revision != self._retriever_revision:
                self._retriever.sync(records)
            self._retriever_revision = revision
            return self._retriever

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
        from fusion import parse_prompt

        cleaned, _ = parse_prompt(prompt)
        return self.retriever().plan(cleaned, base=self.base.family, batch=batch, seed=seed)

    def plan_rows(self, prompt: str, batch: int = 1, seed: int = 0) -> list[AdapterRow]:
        plan = self.plan(prompt, batch=batch, seed=seed)
        rows: list[AdapterRow] = []
        for index, concept in enumerate(plan.concepts):
            for adapter in concept.adapters:
                rows.append(AdapterRow(name=adapter.name, weight=round(adapter.weight, 3), role=adapter.role,
                                       source="auto", concept=plan.concepts[index].text,
                                       reasons="; ".join(adapter.reasons)))
        return rows

    def resolve(self, prompt: str, rows: Sequence[AdapterRow], add_triggers: bool = True
                ) -> tuple[str, list[AdapterSpec]]:
        return resolve_rows(self, prompt, rows, add_triggers)

    def image_runs(self, request: GenerateRequest) -> list[ImageRun]:
        """The batch as runs of images sharing adapters: with auto rows in a batch, each image gets its
        own plan (the composer's per-image masks, see :mod:`app.web.batch_plans`); otherwise one run."""
        if request.batch > 1 and uses_auto(request.rows):
            plan = self.plan(request.prompt, batch=request.batch)
            return image_runs(rows_per_image(request.rows, plan, request.batch))
        return [ImageRun(start=0, count=request.batch, rows=list(request.rows))]

    def _resolve_runs(self, request: GenerateRequest, runs: Sequence[ImageRun]
                      ) -> dict[RowKey, tuple[str, list[AdapterSpec]]]:
        """The prompt and adapters of each distinct adapter set of ``runs`` (each resolved once)."""
        resolved: dict[RowKey, tuple[str, list[AdapterSpec]]] = {}
        for run in runs:
            key = rows_key(run.rows)
            if key not in resolved:
                resolved[key] = self.resolve(request.prompt, run.rows, request.add_triggers)
        return resolved

    def generate(self, request: GenerateRequest, on_step: StepCallback | None = None) -> GenerateOutcome:
        """Render the batch; runs of images with the same adapters share one pipeline call."""
        from pipeline import GenerationResult, generate

        _check_request(request, self.config)
        runs = self.image_runs(request)
        resolved = self._resolve_runs(request, runs)
        base = self.base
        outcome = GenerateOutcome(result=GenerationResult(images=[], provenance=[]), prompts=[], adapters=[],
                                  fusion_options=dict(request.fusion_options))
        with self.generate_lock:
            for number, run in enumerate(runs):
                prompt, specs = resolved[rows_key(run.rows)]
                result = generate(base, prompt, negative_prompt=request.negative_prompt, seed=request.seed + run.start,
                                  steps=request.steps, guidance=request.guidance, batch=run.count,
                                  on_step=_run_steps(on_step, number, len(runs)), adapters=specs,
                                  fusion=request.fusion, fusion_options=request.fusion_options or None)
                outcome.result.images.extend(result.images)
                outcome.result.provenance.extend(result.provenance)
                outcome.prompts.extend([prompt] * run.count)
                outcome.adapters.extend([spec.describe() for spec in specs] for _ in range(run.count))
        return outcome


def _check_request(request: GenerateRequest, config: WebConfig) -> None:
    """Refuse an unknown method, bad options for it, or a batch / step count out of range."""
    from fusion import FUSION_METHODS
    from fusion.methods import make_method

    if request.fusion not in FUSION_METHODS:
        raise WebInputError(f"unknown fusion method {request.fusion!r} (one of {', '.join(FUSION_METHODS)})")
    try:
        make_method(request.fusion, **request.fusion_options)
    except (TypeError, ValueError) as error:
        raise WebInputError(f"fusion options: {error}") from None
    if not 1 <= request.batch <= config.max_batch:
        raise WebInputError(f"batch must be between 1 and {config.max_batch}")
    if not 1 <= request.steps <= config.max_steps:
        raise WebInputError(f"steps must be between 1 and {config.max_steps}")


def _run_steps(on_step: StepCallback | None, number: int, runs: int) -> StepCallback | None:
    """Progress of run ``number`` of ``runs`` as progress over all of them."""
    if on_step is None:
        return None
    if runs == 1:
        return on_step

    def report(step: int, total: int) -> None:
        on_step(number * total + step, runs * total)

    return report


def _filter(value: str | None, allowed: Sequence[str], label: str) -> str | None:
    """"" / "any" / None -> None; otherwise the value, checked."""
    if value is None or value in ("", "any", "all"):
        return None
    if value not in allowed:
        raise WebInputError(f"unknown {label} {value!r} (one of {', '.join(allowed)})")
    return value


def resolve_rows(services: MedleyServices, prompt: str, rows: Sequence[AdapterRow],
                 add_triggers: bool = True) -> tuple[str, list[AdapterSpec]]:
    """The prompt the base gets and the adapters to compose, through :func:`pipeline.adapters.resolve_adapters`.

    Precedence (the core's): a ``<lora:alias:w>`` tag in the prompt beats a manual row of the same
    adapter, which beats an auto (planned) row. A row's role, when set, overrides the catalogue kind.
    """
    from fusion import LoraReference
    from fusion.spec import ROLES
    from pipeline.adapters import resolve_adapters

    used = [row for row in rows if row.use and row.name.strip()]
    picks = [LoraReference(alias=row.name.strip(), weight=float(row.weight)) for row in used if row.source != "auto"]
    planned = [(row.name.strip(), float(row.weight), row.role) for row in used if row.source == "auto"]
    try:
        resolved = resolve_adapters(services.catalog, prompt, picks, planned, base_family=services.base.family,
                                    add_trigger_words=add_triggers)
    except (ValueError, LookupError) as error:
        raise WebInputError(str(error)) from None
    roles = {row.name.strip().lower(): row.role for row in used if row.role in ROLES}
    for spec in resolved.specs:
        spec.role = roles.get(spec.name.lower(), spec.role)
    if not resolved.prompt.strip():
        raise WebInputError("the prompt is empty")
    return resolved.prompt, resolved.specs
