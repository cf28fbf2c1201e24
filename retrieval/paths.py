"""Where retrieval keeps its shipped assets and its state."""

from __future__ import annotations

from pathlib import Path

from library.home import medley_home

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
TOY_CLIP_DIR = ASSETS_DIR / "toy-clip"
WEIGHT_ENCODER_DIR = ASSETS_DIR / "weight-encoder"


def index_dir(home: str | Path | None = None) -> Path:
    """``MEDLEY_HOME/index`` (or ``<home>/index``), created if missing."""
    root = Path(home).expanduser() if home is not None else medley_home()
    path = root / "index"
    path.mkdir(parents=True, exist_ok=True)
    return path
