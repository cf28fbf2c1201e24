"""Where Medley keeps its state (shared by every layer): MEDLEY_HOME (default ~/.medley)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MEDLEY_HOME"
DEFAULT_HOME = "~/.medley"


def medley_home_path() -> Path:
    """Where MEDLEY_HOME is, without creating it (``medley doctor`` only looks)."""
    return Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser()


def medley_home() -> Path:
    home = medley_home_path()
    home.mkdir(parents=True, exist_ok=True)
    return home


def outputs_dir() -> Path:
    path = medley_home() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path
