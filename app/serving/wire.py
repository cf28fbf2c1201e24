"""Render requests and outcomes as JSON, for HTTP and for Ray Serve (no pickles cross the wire)."""

from __future__ import annotations

import base64
import io
from typing import Any

from library.picks import Pick
from pipeline.studio import RenderOutcome, RenderRequest

REQUEST_FIELDS = ("prompt", "negative_prompt", "seed", "batch", "steps", "guidance", "width", "height", "auto",
                  "fusion", "fusion_options", "add_triggers", "plan_seed")


def request_from_json(body: dict[str, Any]) -> RenderRequest:
    """A :class:`RenderRequest` from ``{"prompt": ..., "picks": [{"name":, "weight":, "role":}], ...}``."""
    if not isinstance(body, dict) or "prompt" not in body:
        raise ValueError("a render request is a JSON object with at least a 'prompt'")
    unknown = set(body) - {*REQUEST_FIELDS, "picks"}
    if unknown:
        raise ValueError(f"unknown request fields: {', '.join(sorted(unknown))}")
    picks = []
    for item in body.get("picks", []):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError("each pick is an object with a 'name' (and 'weight', 'role', 'schedule')")
        picks.append(Pick(name=str(item["name"]), weight=float(item.get("weight", 1.0)), role=item.get("role"),
                          source="manual", schedule=item.get("schedule")))
    fields = {key: body[key] for key in REQUEST_FIELDS if key in body}
    return RenderRequest(picks=picks, **fields)


def adapter_set_id(body: dict[str, Any]) -> str:
    """The multiplexing key of a request: its adapter set (names and weights, sorted), '' for none."""
    picks = body.get("picks", []) if isinstance(body, dict) else []
    return ",".join(sorted(f"{p.get('name')}:{float(p.get('weight', 1.0)):g}" for p in picks if isinstance(p, dict)))


def outcome_to_json(outcome: RenderOutcome) -> dict[str, Any]:
    images = []
    for image in outcome.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append(base64.b64encode(buffer.getvalue()).decode())
    return {"images": images, "provenance": [p.to_dict() for p in outcome.provenance], "prompts": outcome.prompts,
            "notices": outcome.notices, "fusion": outcome.fusion}


def images_from_json(answer: dict[str, Any]) -> list[Any]:
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in answer["images"]]
