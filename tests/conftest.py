import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_base():
    from pipeline import load_base

    return load_base(None, device="cpu")


@pytest.fixture(autouse=True)
def medley_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLEY_HOME", str(tmp_path / "medley-home"))
    return tmp_path / "medley-home"


@pytest.fixture(scope="module")
def pipe():
    """A random-weight pipeline of the toy base's architecture (fast; no trained weights needed)."""
    import torch

    from pipeline.toy_base import assemble, new_unet, new_vae

    torch.manual_seed(0)
    pipe = assemble(new_vae(), new_unet())
    pipe.set_progress_bar_config(disable=True)
    return pipe
