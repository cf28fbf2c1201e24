"""Shared helpers of the web tests (no tests here): a small library, services on a tiny base, a server."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SYNTHETIC = (
    # name, trigger, kind, description
    ("heart", "hartok", "content", "a heart shape with two rounded lobes"),
    ("zigzag", "zigzor", "style", "a zigzag texture of sharp diagonal stripes"),
    ("sunset", "sunvell", "style", "a warm sunset palette of orange and pink"),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_synthetic_library(folder: Path) -> list[Path]:
    """Three small toy-base LoRAs (random weights, gentle scale) with triggers and descriptions."""
    from library.formats.writer import write_kohya
    from library.metadata import AdapterInfo
    from library.synthetic import random_adapter

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, (name, trigger, kind, description) in enumerate(SYNTHETIC):
        adapter = random_adapter("toy", every=7, rank=4, alpha=0.02, seed=seed)
        info = AdapterInfo(name=name, title=name, triggers=[trigger], description=description, kind=kind,
                           preferred_weight=0.8)
        paths.append(write_kohya(adapter, folder / f"{name}.safetensors", info, base="toy"))
    return paths


def make_services(home: Path, starters: bool = False) -> Any:
    """Services on a tiny random toy base (no assets needed), with the synthetic library scanned in
    (and the starter library, when asked and built)."""
    from app.web.services import MedleyServices, WebConfig
    from library.catalog import Catalog
    from training.testing import random_toy_base

    catalog = Catalog(home, register_starters=starters)
    write_synthetic_library(home / "loras")
    catalog.scan(home / "loras")
    return MedleyServices(WebConfig(), base=random_toy_base(0), base_factory=lambda: random_toy_base(0),
                          catalog=catalog)


def start_server(services: Any) -> tuple[Any, str]:
    from app.web.app import LaunchOptions, launch

    return launch(services, LaunchOptions(host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True))
