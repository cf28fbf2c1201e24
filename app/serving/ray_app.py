"""Medley on Ray Serve: replicas that each hold one base, an adapter cache and a batcher.

``serve run app.serving.ray_app:app`` (or ``medley serve --ray``) starts a deployment whose replicas
each load the base once and keep the adapters they served (:class:`pipeline.adapter_cache.AdapterCache`).
Requests are routed by adapter set with Ray Serve's model multiplexing: a client sets the request's
``multiplexed_model_id`` (HTTP header ``serve_multiplexed_model_id``) to its adapter set
(:func:`app.serving.wire.adapter_set_id`), and Serve sends it to a replica where that set is warm.
Inside a replica, concurrent requests go through the batching scheduler (:mod:`pipeline.batcher`), so
requests with different adapter sets still share UNet passes. Requests and answers are JSON
(:mod:`app.serving.wire`). Ray is optional: ``pip install 'medley[serve]'``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ray import serve

DEFAULT_CONFIG: dict[str, Any] = {"base": None, "home": None, "max_batch": 8, "batch_wait_s": 0.05,
                                  "cache_bytes": None, "threads": 1, "adapter_sets_per_replica": 16}


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class MedleyReplica:
    """One replica: a base, the catalogue of ``home`` (MEDLEY_HOME), the adapter cache and a batcher."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        settings = {**DEFAULT_CONFIG, **(config or {})}
        if settings["home"]:
            os.environ["MEDLEY_HOME"] = str(settings["home"])
        import torch

        torch.set_num_threads(int(settings["threads"]))
        from library.catalog import Catalog
        from pipeline import Studio, load_base
        from pipeline.batcher import RenderBatcher

        self.studio = Studio(load_base(settings["base"]), Catalog(), cache_bytes=settings["cache_bytes"])
        self.batcher = RenderBatcher(self.studio, int(settings["max_batch"]), float(settings["batch_wait_s"]))
        self.replica = serve.get_replica_context().replica_id.unique_id

    @serve.multiplexed(max_num_models_per_replica=DEFAULT_CONFIG["adapter_sets_per_replica"])
    async def adapter_set(self, set_id: str) -> tuple[str, ...]:
        """Warm the adapters of ``set_id`` ("name:w,name:w") in this replica's cache."""
        names = tuple(item.rpartition(":")[0] or item for item in set_id.split(",") if item)
        for name in names:
            await asyncio.to_thread(lambda n=name: self.studio.adapters.get(self.studio.catalog.get(n)))
        return names

    async def render_json(self, body: dict[str, Any]) -> dict[str, Any]:
        """Render one JSON request; a request the core refuses gets ``{"error": ...}``, never an exception."""
        from app.serving.wire import outcome_to_json, request_from_json

        set_id = serve.get_multiplexed_model_id()
        try:
            if set_id:
                await self.adapter_set(set_id)
            outcome = await asyncio.to_thread(self.batcher.render, request_from_json(body))
        except Exception as error:  # noqa: BLE001 - answered to the client as its error, the replica goes on
            return {"error": f"{type(error).__name__}: {error}", "replica": self.replica}
        return {**outcome_to_json(outcome), "replica": self.replica}

    async def status(self) -> dict[str, Any]:
        status = self.studio.status()
        status["batching"] = {**self.batcher.stats.to_dict(), "queued": self.batcher.queued}
        return {**status, "replica": self.replica}

    async def __call__(self, request: Any) -> dict[str, Any]:
        """HTTP: POST a JSON request to /generate, or GET /status."""
        if request.method == "GET":
            return await self.status()
        return await self.render_json(await request.json())


def build(config: dict[str, Any] | None = None, replicas: int = 1) -> Any:
    """The application to ``serve.run``: ``replicas`` replicas of :class:`MedleyReplica`."""
    return MedleyReplica.options(num_replicas=replicas).bind(config or {})


app = build()
