"""Where Medley keeps its state (shared by every layer): MEDLEY_HOME (default ~/.medley)."""

from __future__ import annotations

import os
from pathlib import Path


def medley_home() -> Path:
    home = Path(os.environ.get("MEDLEY_HOME", "~/.medley")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def outputs_dir() -> Path:
    path = medley_home() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path
