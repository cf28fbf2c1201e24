"""Training runs started from the web app: one at a time, in a background thread, stoppable.

A run goes through :func:`training.dreambooth_lora.start` (the core of ``medley train``) on
its own copy of the base (generation keeps the shared one). Its callbacks fill a
:class:`JobState` that the Train tab polls: step, losses, validation renders. The finished
adapter is written to ``MEDLEY_HOME/adapters`` and catalogued by the core, so it shows in
the Library tab. A stopped run keeps its checkpoint in ``MEDLEY_HOME/runs/<name>``
(``medley train --resume NAME`` continues it).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from app.web.services import MedleyServices
    from training.lora_trainer import TrainingProgress

B4M_ROLES: tuple[str, ...] = ("none", "content", "style")
MAX_IMAGES = 500
MAX_SAMPLES = 24


@dataclass
class TrainRequest:
    name: str
    trigger: str
    class_prompt: str = ""
    images: list[str] = field(default_factory=list)  # uploaded image files
    concept: str = ""  # or a toy-world novel concept to export (name or trigger)
    concept_count: int = 16
    steps: int = 200
    rank: int = 4
    prior_preservation: bool = False
    cat: bool = False
    b4m_role: str = "none"
    kind: str = "content"
    sample_every: int = 50
    seed: int = 0


@dataclass
class JobState:
    name: str
    status: str = "starting"  # starting, training, done, stopped, failed
    step: int = 0
    total: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    samples: list[tuple[Image.Image, str]] = field(default_factory=list)
    message: str = ""
    result: str = ""  # the catalogued adapter's name when done
    seconds_per_step: float = 0.0

    @property
    def running(self) -> bool:
        return self.status in ("starting", "training")

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "step": self.step, "total": self.total,
                "loss": self.losses[-1][1] if self.losses else None, "message": self.message,
                "adapter": self.result}


class TrainingJobs:
    """At most one training run at a time (the machine is small and runs share a lock file)."""

    def __init__(self, services: MedleyServices) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: JobState | None = None

    def start(self, request: TrainRequest) -> JobState:
        _check(request)
        with self._lock:
            if self.state is not None and self.state.running:
                raise ValueError(f"a training run ({self.state.name}) is going; stop it first")
            self._stop.clear()
            self.state = JobState(name=request.name, total=request.steps)
            self._thread = threading.Thread(target=self._guarded, args=(request, self.state),
                                            name=f"medley-train-{request.name}", daemon=True)
            self._thread.start()
            return self.state

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _guarded(self, request: TrainRequest, state: JobState) -> None:
        try:
            _run(self.services, request, state, self._stop)
        except Exception as error:  # noqa: BLE001 - shown to the user; the server carries on
            state.status, state.message = "failed", str(error) or type(error).__name__


def _check(request: TrainRequest) -> None:
    from training.captions import check_trigger
    from training.runs import check_name

    check_name(request.name)
    check_trigger(request.trigger)
    if request.b4m_role not in B4M_ROLES:
        raise ValueError(f"Break-for-Make role must be one of {', '.join(B4M_ROLES)}")
    if not request.images and not request.concept:
        raise ValueError("upload training images or pick a toy-world concept")
    if len(request.images) > MAX_IMAGES:
        raise ValueError(f"at most {MAX_IMAGES} training images")
    if (request.prior_preservation or request.cat) and not request.class_prompt.strip():
        raise ValueError("prior preservation and CAT need a class prompt (e.g. 'a shape')")


def _stage_images(request: TrainRequest, folder: Path, size: int) -> Path:
    """Copy the uploads (and/or export the toy concept) into a fresh folder the core reads."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if request.concept:
        from toyworld.export import export_concept

        export_concept(request.concept, request.concept_count, folder, size=size)
    for index, source in enumerate(request.images):
        path = Path(source)
        shutil.copyfile(path, folder / f"upload-{index:04d}{path.suffix.lower()}")
    return folder


def _run(services: MedleyServices, request: TrainRequest, state: JobState, stop: threading.Event) -> None:
    from PIL import Image

    from library.home import medley_home
    from training.dreambooth_lora import TrainArgs, TrainingEvents, start

    state.message = "loading a copy of the base"
    base = services.new_base()
    staging = _stage_images(request, medley_home() / "web-uploads" / request.name, base.default_size)
    args = TrainArgs(name=request.name, images=str(staging), trigger=request.trigger,
                     class_prompt=request.class_prompt.strip() or None, prior=request.prior_preservation,
                     cat=request.cat, kind=request.kind, b4m=None if request.b4m_role == "none" else request.b4m_role,
                     rank=request.rank, steps=request.steps, seed=request.seed, base=services.config.base,
                     validate_every=request.sample_every)

    def on_progress(progress: TrainingProgress) -> None:
        state.status = "training"
        state.step, state.total = progress.step, progress.total
        state.seconds_per_step = progress.seconds_per_step
        state.losses.append((progress.step, float(progress.loss)))
        state.message = f"step {progress.step}/{progress.total}, loss {progress.loss:.4f}"

    def on_message(text: str) -> None:
        state.message = text

    def on_validation(step: int, paths: list[Path]) -> None:
        for path in paths:
            with Image.open(path) as image:
                state.samples.append((image.convert("RGB"), f"step {step}"))
        del state.samples[:-MAX_SAMPLES]

    events = TrainingEvents(on_progress=on_progress, on_message=on_message, on_validation=on_validation,
                            stop=stop.is_set)
    started = time.perf_counter()
    try:
        result = start(args, base=base, events=events, catalog=services.catalog)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not result.finished:
        state.status = "stopped"
        state.message = (f"stopped at step {result.step}/{result.steps}; the checkpoint is in {result.run_dir} "
                         f"(`medley train --resume {request.name}`)")
        return
    assert result.record is not None
    state.result = result.record.name
    state.status = "done"
    state.message = (f"{result.record.name} is in the library after {time.perf_counter() - started:.0f}s "
                     f"(try it: <lora:{result.record.name}:1> {request.trigger})")


def concept_choices() -> Sequence[str]:
    from toyworld.vocab import NOVEL_CONCEPTS

    return [f"{c.name} ({c.trigger}, {c.kind})" for c in NOVEL_CONCEPTS]
