"""The core render service: :class:`Studio` turns a :class:`RenderRequest` into a :class:`RenderOutcome`.

Every face (the CLI, the web app, the Python API, a serving deployment) builds a request and
calls :meth:`Studio.render`; the faces translate, the core composes:

1. parse each prompt's ``<lora:>`` tags once (:func:`fusion.parse_prompt`);
2. plan each image with the retriever when asked (``auto``), image 0 with the full plan and the
   others with the composer's per-image masks (:mod:`pipeline.image_plans`);
3. resolve each image's picks by one precedence, tags > hand picks > auto plan
   (:func:`library.picks.merge_picks`), against the catalogue, through the adapter cache;
4. add trigger words with the one function (:func:`library.triggers.add_triggers`);
5. render every image in one :func:`pipeline.generate` call, which writes each image's provenance:
   images with different adapters share each UNet pass when the fusion method batches (per-row
   coefficients, :mod:`fusion.rows`), else they are grouped into one run per adapter set.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from fusion import AdapterSpec, LoraReference, parse_prompt
from library.errors import LibraryError
from library.picks import Pick, merge_picks
from library.records import AdapterRecord
from library.triggers import add_triggers
from library.vocabulary import BASE_NAMES
from pipeline.adapter_cache import AdapterCache
from pipeline.base import LoadedBase
from pipeline.generate import generate, image_prompts, image_seeds
from pipeline.image_plans import picks_per_image
from pipeline.provenance import Provenance

if TYPE_CHECKING:
    from library.catalog import Catalog
    from retrieval.plan import Plan

StepCallback = Callable[[int, int], None]


class RenderError(ValueError):
    """A request the core refuses; the message says why, for the face to show as it is."""


class Planner(Protocol):
    """What the studio needs of a retriever (``retrieval.Retriever``)."""

    def plan(self, prompt: str, base: str | None = None, batch: int = 1, seed: int = 0) -> Plan: ...

    def sync(self, records: Sequence[AdapterRecord]) -> Any: ...


@dataclass
class RenderRequest:
    """What to render. ``prompt``: one prompt for ``batch`` images, or one per image; ``seed``: image i
    uses ``seed + i``, or ``seed[i]`` from a list. ``picks``: hand picks (source ``manual``) and, from a
    face that showed the plan, the plan's picks as edited (source ``auto``). ``auto``: plan adapters
    from the library for each image. ``plan_seed`` seeds the composer's per-image masks."""

    prompt: str | Sequence[str]
    negative_prompt: str = ""
    seed: int | Sequence[int] = 0
    batch: int | None = None
    steps: int = 20
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    picks: Sequence[Pick] = ()
    auto: bool = False
    fusion: str = "merge"
    fusion_options: Mapping[str, Any] = field(default_factory=dict)
    add_triggers: bool = True
    plan_seed: int = 0


@dataclass
class RenderOutcome:
    """Per image (in request order): the image, its provenance, the prompt the base was given and the picks
    it composed (roles filled in from the catalogue). ``plans``: the plan of each planned prompt;
    ``notices``: what the user should know (e.g. no adapter fits); ``runs``: the distinct adapter sets."""

    images: list[Image.Image]
    provenance: list[Provenance]
    prompts: list[str]
    picks: list[list[Pick]]
    adapters: list[list[dict[str, Any]]]  # per image: AdapterSpec.describe() of each composed adapter
    fusion: str
    fusion_options: dict[str, Any]
    plans: dict[str, Plan] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    runs: int = 0

    @property
    def prompt(self) -> str:
        return self.prompts[0]


@dataclass
class _Image:
    index: int
    clean: str
    tags: list[Pick]
    seed: int
    picks: list[Pick] = field(default_factory=list)
    specs: list[AdapterSpec] = field(default_factory=list)
    records: list[AdapterRecord] = field(default_factory=list)
    prompt: str = ""


class Studio:
    """The base, the catalogue and the retriever, and the one render path over them. Thread-safe: renders
    are serialised (they compose into the one loaded pipeline); the base, catalogue and retriever load on
    first use. ``base``/``retriever`` may be objects or factories (a retriever factory gets the records)."""

    def __init__(
        self,
        base: LoadedBase | Callable[[], LoadedBase] | None = None,
        catalog: Catalog | None = None,
        retriever: Planner | Callable[[list[AdapterRecord]], Planner] | None = None,
        *,
        cache_bytes: int | None = None,
    ) -> None:
        self._base = base if isinstance(base, LoadedBase) else None
        self._base_factory = base if callable(base) and not isinstance(base, LoadedBase) else None
        self._catalog = catalog
        self._retriever: Planner | None = retriever if retriever is not None and not callable(retriever) else None
        self._retriever_factory = retriever if callable(retriever) else None
        self._retriever_revision = -1
        self._cache: AdapterCache | None = None
        self._cache_bytes = cache_bytes
        self._load_lock = threading.RLock()
        self._retriever_lock = threading.Lock()
        self.render_lock = threading.Lock()  # one render at a time on the shared pipeline

    # ------------------------------------------------------------------ shared state

    @property
    def base(self) -> LoadedBase:
        with self._load_lock:
            if self._base is None:
                if self._base_factory is not None:
                    self._base = self._base_factory()
                else:
                    from pipeline.base import load_base

                    self._base = load_base()
            return self._base

    @property
    def catalog(self) -> Catalog:
        with self._load_lock:
            if self._catalog is None:
                from library.catalog import Catalog

                self._catalog = Catalog()
            return self._catalog

    @property
    def adapters(self) -> AdapterCache:
        with self._load_lock:
            if self._cache is None:
                self._cache = AdapterCache(self.catalog, self._cache_bytes)
            return self._cache

    def retriever(self) -> Planner:
        """The retriever over the catalogue, synced whenever the catalogue changed."""
        with self._retriever_lock:
            revision = self.catalog.revision
            if self._retriever is None:
                records = self.catalog.list()
                if self._retriever_factory is not None:
                    self._retriever = self._retriever_factory(records)  # type: ignore[call-arg]
                else:
                    from retrieval import Retriever

                    self._retriever = Retriever(records, home=self.catalog.home)
            elif revision != self._retriever_revision:
                self._retriever.sync(self.catalog.list())
            self._retriever_revision = revision
            return self._retriever

    def status(self) -> dict[str, Any]:
        """What a status endpoint shows: the base and the adapter cache's figures (hits, loads, evictions, bytes)."""
        base = self._base
        cache = self._cache
        return {
            "base": None if base is None else {"name": base.name, "family": base.family, "attention": base.attention},
            "adapter_cache": (cache.stats.to_dict() if cache is not None else {"hits": 0, "loads": 0, "evictions": 0,
                                                                                "bytes": 0, "entries": 0}),
            "adapter_cache_budget_bytes": self._cache_bytes,
        }

    # ------------------------------------------------------------------ planning

    def plan(self, prompt: str, batch: int = 1, seed: int = 0) -> Plan:
        """The composer's plan for ``prompt`` (its ``<lora:>`` tags removed) on the loaded base."""
        cleaned, _ = parse_prompt(prompt)
        return self.retriever().plan(cleaned, base=self.base.family, batch=batch, seed=seed)

    # ------------------------------------------------------------------ rendering

    def render(self, request: RenderRequest, on_step: StepCallback | None = None) -> RenderOutcome:
        """Render ``request`` (see the module docstring); raises :class:`RenderError` for a request it refuses,
        ``LibraryError`` for an adapter the catalogue does not have."""
        outcome = self.render_many([request], [on_step])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def render_many(self, requests: Sequence[RenderRequest],
                    on_steps: Sequence[StepCallback | None] | None = None) -> list[RenderOutcome | BaseException]:
        """Render several requests, each image in its own request's order: requests that share size, steps,
        guidance, negative prompt and fusion settings go through one :func:`pipeline.generate` call (a
        heterogeneous batch when the method batches). A request the core refuses gets its exception in its
        place; the others are rendered."""
        callbacks = list(on_steps) if on_steps is not None else [None] * len(requests)
        answers: list[RenderOutcome | BaseException | None] = [None] * len(requests)
        prepared: list[tuple[int, list[_Image], RenderOutcome]] = []
        for number, request in enumerate(requests):
            try:
                prepared.append((number, *self._prepare(request)))
            except (LibraryError, ValueError, LookupError, RuntimeError) as error:  # this request only
                answers[number] = error
        groups: dict[tuple[object, ...], list[tuple[int, list[_Image], RenderOutcome]]] = {}
        for item in prepared:
            groups.setdefault(_batch_key(requests[item[0]]), []).append(item)
        for group in groups.values():
            try:
                self._render_group([requests[n] for n, _, _ in group], group, [callbacks[n] for n, _, _ in group])
            except (ValueError, RuntimeError) as error:
                for number, _, _ in group:
                    answers[number] = error
                continue
            for number, _, outcome in group:
                answers[number] = outcome
        return [answer if answer is not None else RenderError("not rendered") for answer in answers]

    def _prepare(self, request: RenderRequest) -> tuple[list[_Image], RenderOutcome]:
        """Everything before the pipeline: tags, plans, picks, specs, prompts and notices."""
        _check_method(request.fusion, request.fusion_options)
        images = self._images(request)
        outcome = RenderOutcome(images=[], provenance=[], prompts=[], picks=[], adapters=[], fusion=request.fusion,
                                fusion_options=dict(request.fusion_options))
        self._plan_images(request, images, outcome)
        self._resolve(request, images)
        outcome.notices.extend(self._vocabulary_notices(images))
        outcome.runs = len(_runs(images))
        return images, outcome

    def _render_group(self, requests: list[RenderRequest], group: list[tuple[int, list[_Image], RenderOutcome]],
                      callbacks: list[StepCallback | None]) -> None:
        """One generate call for requests sharing their batch key; each outcome gets its own images."""
        first = requests[0]
        images = [image for _, request_images, _ in group for image in request_images]
        with self.render_lock:
            result = generate(
                self.base, [image.prompt for image in images], negative_prompt=first.negative_prompt,
                seed=[image.seed for image in images], steps=first.steps, guidance=first.guidance,
                width=first.width, height=first.height, on_step=_fan_out(callbacks),
                adapters=[image.specs for image in images], fusion=first.fusion,
                fusion_options=dict(first.fusion_options) or None)
        pairs = iter(zip(result.images, result.provenance, strict=True))
        for _, request_images, outcome in group:
            outcome.notices.extend(result.notices)
            for image in request_images:
                picture, record = next(pairs)
                outcome.images.append(picture)
                outcome.provenance.append(record)
                outcome.prompts.append(image.prompt)
                outcome.picks.append(image.picks)
                outcome.adapters.append([spec.describe() for spec in image.specs])

    def _images(self, request: RenderRequest) -> list[_Image]:
        prompts = image_prompts(request.prompt, request.batch)
        seeds = image_seeds(request.seed, len(prompts))
        parsed: dict[str, tuple[str, list[Pick]]] = {}
        for text in prompts:
            if text not in parsed:  # each distinct prompt's tags are parsed once
                clean, references = parse_prompt(text)
                parsed[text] = (clean, [_tag_pick(reference) for reference in references])
        pairs = enumerate(zip(prompts, seeds, strict=True))
        return [_Image(index, *parsed[text], seed) for index, (text, seed) in pairs]

    def _plan_images(self, request: RenderRequest, images: list[_Image], outcome: RenderOutcome) -> None:
        """Each image's picks before the catalogue: tags, hand picks, and its share of the auto plan."""
        manual = [pick for pick in request.picks if pick.source != "auto"]
        edited = [pick for pick in request.picks if pick.source == "auto"]
        groups: dict[str, list[_Image]] = {}
        for image in images:
            groups.setdefault(image.clean, []).append(image)
        for clean, group in groups.items():
            auto: list[list[Pick]] = [list(edited) for _ in group]
            wants_plan = (request.auto and not edited) or (edited and len(group) > 1)
            if wants_plan and clean.strip():
                plan = self.retriever().plan(clean, base=self.base.family, batch=len(group), seed=request.plan_seed)
                outcome.plans[clean] = plan
                if edited:
                    auto = picks_per_image(edited, plan, len(group))
                else:
                    auto = [plan.picks(j) for j in range(len(group))]
                if request.auto and not plan.adapters:
                    outcome.notices.append(f"no library adapter fits {clean!r} closely enough; the base alone "
                                           "draws it")
            for image, planned in zip(group, auto, strict=True):
                image.picks = merge_picks(image.tags, manual, planned)

    def _resolve(self, request: RenderRequest, images: list[_Image]) -> None:
        """Picks -> catalogue records -> adapter specs, and each image's final prompt."""
        family = self.base.family
        records: dict[str, AdapterRecord] = {}
        specs: dict[Pick, AdapterSpec] = {}
        for image in images:
            triggers: list[list[str]] = []
            resolved: list[Pick] = []
            for pick in image.picks:
                record = records.get(pick.key)
                if record is None:
                    record = self.catalog.get(pick.name)
                    if record.base not in (family, "unknown"):
                        raise RenderError(
                            f"adapter {record.name!r} is made for {BASE_NAMES.get(record.base, record.base)} "
                            f"({record.base}); the loaded base is {BASE_NAMES.get(family, family)} ({family})")
                    records[pick.key] = record
                # the catalogue's spelling of the name (a tag may be typed in another case, or by id)
                final = Pick(name=record.name, weight=pick.weight, role=pick.role or record.kind, source=pick.source,
                             schedule=pick.schedule, te_weight=pick.te_weight, unet_weight=pick.unet_weight,
                             concept=pick.concept, reasons=pick.reasons)
                if final not in specs:
                    specs[final] = _spec(final, self.adapters.get(record))
                resolved.append(final)
                triggers.append(record.triggers)
            image.picks = resolved
            image.specs = [specs[pick] for pick in resolved]
            image.records = [records[pick.key] for pick in resolved]
            image.prompt = add_triggers(image.clean, triggers) if request.add_triggers else image.clean
            if not image.prompt.strip():
                raise RenderError("the prompt is empty")


    def _vocabulary_notices(self, images: list[_Image]) -> list[str]:
        """On the embedded toy base: the prompt words it cannot draw that no composed adapter covers, with the
        library adapters that would add them."""
        if self.base.family != "toy":
            return []
        from toyworld.prompt_check import unknown_words

        notices: list[str] = []
        seen: set[tuple[str, str]] = set()
        library: list[AdapterRecord] | None = None
        for image in images:
            for unknown in unknown_words(image.clean):
                if (unknown.word, unknown.slot) in seen or any(_mentions(r, unknown.word) for r in image.records):
                    continue
                seen.add((unknown.word, unknown.slot))
                if library is None:
                    library = [r for r in self.catalog.list() if r.base in ("toy", "unknown")]
                offers = tuple(f"{r.name} (trigger {r.triggers[0]})" if r.triggers else r.name
                               for r in library if _mentions(r, unknown.word))[:3]
                notices.append(unknown.message(offers))
        return notices


def _mentions(record: AdapterRecord, word: str) -> bool:
    """Whether an adapter's name, title, triggers, tags or description hold ``word`` as a whole word."""
    text = " ".join([record.name.replace("-", " "), record.title, *record.triggers, *record.tags, record.description])
    return re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", text.lower()) is not None


def _tag_pick(reference: LoraReference, source: str = "tag") -> Pick:
    return Pick(name=reference.alias, weight=reference.weight, source=source,
                schedule=None if reference.schedule is None else reference.schedule.to_text(),
                te_weight=reference.te_weight, unet_weight=reference.unet_weight)


def parse_pick(text: str) -> Pick:
    """A hand pick written as a tag body: ``NAME``, ``NAME:W``, ``NAME:te=0.5:unet=1``, ``NAME:0.8@0.5``
    (what ``--lora`` takes)."""
    _, references = parse_prompt(f"<lora:{text}>")
    if len(references) != 1:
        raise RenderError(f"{text!r} is not an adapter pick; expected NAME[:WEIGHT]")
    return _tag_pick(references[0], source="manual")


def _spec(pick: Pick, adapter: Any) -> AdapterSpec:
    try:
        return AdapterSpec(name=pick.name, adapter=adapter, weight=pick.weight, role=pick.role or "other",
                           unet_weight=pick.unet_weight, te_weight=pick.te_weight, schedule=pick.schedule)
    except ValueError as error:
        raise RenderError(str(error)) from None


def _check_method(fusion: str, options: Mapping[str, Any]) -> None:
    from fusion import FUSION_METHODS
    from fusion.methods import make_method

    if fusion not in FUSION_METHODS:
        raise RenderError(f"unknown fusion method {fusion!r} (one of {', '.join(FUSION_METHODS)})")
    try:
        make_method(fusion, **dict(options))
    except (TypeError, ValueError) as error:
        raise RenderError(f"fusion options: {error}") from None


def _batch_key(request: RenderRequest) -> tuple[object, ...]:
    """What requests must share to go through one pipeline call."""
    options = json.dumps(dict(request.fusion_options), sort_keys=True, default=str)
    return (request.width, request.height, request.steps, request.guidance, request.negative_prompt, request.fusion,
            options)


def _fan_out(callbacks: list[StepCallback | None]) -> StepCallback | None:
    """One generate call's progress to every request in it."""
    live = [callback for callback in callbacks if callback is not None]
    if not live:
        return None

    def report(done: int, total: int) -> None:
        for callback in live:
            callback(done, total)

    return report


def _runs(images: list[_Image]) -> list[list[_Image]]:
    """Images composing the same adapters (same picks) share one pipeline run, in first-seen order."""
    runs: dict[tuple[Pick, ...], list[_Image]] = {}
    for image in images:
        runs.setdefault(tuple(image.picks), []).append(image)
    return list(runs.values())
