"""A batching scheduler in front of the studio: requests arriving close together share one UNet pass.

Faces that serve many users (``medley serve``, a Ray Serve replica) hand each request to
:meth:`RenderBatcher.submit` from their own thread and wait on the returned future. One worker thread
takes the first waiting request, waits up to ``max_wait_s`` for more (or until ``max_batch`` images
are queued), and renders them with :meth:`pipeline.Studio.render_many`, which puts requests that
share size, steps, guidance and fusion settings into one pipeline call (a heterogeneous batch when
the fusion method batches). A request the core refuses fails alone; the others are answered. Each
request's ``on_step`` sees the progress of the batch it rides in.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from pipeline.studio import RenderOutcome, RenderRequest, Studio

StepCallback = Callable[[int, int], None]


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0
    images: int = 0
    failed: int = 0
    largest_batch: int = 0  # images

    def to_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "batches": self.batches, "images": self.images, "failed": self.failed,
                "largest_batch": self.largest_batch}


@dataclass
class _Waiting:
    request: RenderRequest
    on_step: StepCallback | None
    future: Future[RenderOutcome] = field(default_factory=Future)

    @property
    def images(self) -> int:
        prompt = self.request.prompt
        return len(prompt) if not isinstance(prompt, str) else (self.request.batch or 1)


class RenderBatcher:
    """See the module docstring. ``max_batch``: images per batch; ``max_wait_s``: how long the first request
    of a batch waits for company."""

    def __init__(self, studio: Studio, max_batch: int = 8, max_wait_s: float = 0.05) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not 0 <= max_wait_s <= 10:
            raise ValueError("max_wait_s must lie between 0 and 10 seconds")
        self.studio = studio
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatcherStats()
        self._queue: deque[_Waiting] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="medley-batcher", daemon=True)
        self._worker.start()

    def submit(self, request: RenderRequest, on_step: StepCallback | None = None) -> Future[RenderOutcome]:
        waiting = _Waiting(request, on_step)
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(waiting)
            self.stats.requests += 1
            self._ready.notify()
        return waiting.future

    def render(self, request: RenderRequest, on_step: StepCallback | None = None,
               timeout: float | None = None) -> RenderOutcome:
        """Submit and wait (raises what the core raised for this request)."""
        return self.submit(request, on_step).result(timeout)

    @property
    def queued(self) -> int:
        with self._ready:
            return len(self._queue)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._worker.join(timeout=30)

    def _take(self) -> list[_Waiting]:
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while sum(w.images for w in self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch: list[_Waiting] = []
            images = 0
            while self._queue and (not batch or images + self._queue[0].images <= self.max_batch):
                waiting = self._queue.popleft()
                batch.append(waiting)
                images += waiting.images
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            live = [w for w in batch if w.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                answers = self.studio.render_many([w.request for w in live], [w.on_step for w in live])
            except BaseException as error:  # noqa: BLE001 - every waiting request must hear of it
                answers = [error] * len(live)
            images = sum(w.images for w in live)
            self.stats.batches += 1
            self.stats.images += images
            self.stats.largest_batch = max(self.stats.largest_batch, images)
            for waiting, answer in zip(live, answers, strict=True):
                if isinstance(answer, BaseException):
                    self.stats.failed += 1
                    waiting.future.set_exception(answer)
                else:
                    waiting.future.set_result(answer)
