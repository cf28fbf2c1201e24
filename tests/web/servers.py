"""What the web tests' servers hold, and how they are built (the fixtures are in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from test_web_support import write_synthetic_library

from app.web.services import MedleyServices, WebConfig


@dataclass(frozen=True)
class WebSetup:
    """What a module's server holds."""

    starters: bool = False  # the shipped starter library, when it is present
    embedded_base: bool = False  # the shipped toy base (assets/toy-base) instead of a random one, when present
    synthetic: bool = True  # the three synthetic adapters (always added when the library would be empty)


class WebServer(NamedTuple):
    services: MedleyServices
    app: Any  # the gradio Blocks
    url: str


def embedded_base_present() -> bool:
    """The trained toy base is in assets/ (its weights, not a pointer file)."""
    from pipeline.toy_base import TOY_BASE_DIR

    weights = TOY_BASE_DIR / "unet" / "diffusion_pytorch_model.safetensors"
    return weights.is_file() and weights.stat().st_size > 1_000_000


def starter_library_present() -> bool:
    from library.catalog import STARTER_DIR

    return any(STARTER_DIR.glob("*.safetensors"))


def _base_factory(setup: WebSetup) -> Any:
    if setup.embedded_base and embedded_base_present():
        from pipeline import load_base

        return lambda: load_base(None, device="cpu")
    from training.testing import random_toy_base

    return lambda: random_toy_base(0)


def build_services(home: Path, setup: WebSetup) -> MedleyServices:
    from library.catalog import Catalog

    catalog = Catalog(home, register_starters=setup.starters)
    if setup.synthetic or not catalog.list():
        write_synthetic_library(home / "loras")
        catalog.scan(home / "loras")
    factory = _base_factory(setup)
    return MedleyServices(WebConfig(), base=factory(), base_factory=factory, catalog=catalog)
