"""Training run folders: ``MEDLEY_HOME/runs/<name>/``.

A run folder holds everything a run needs to resume after any interruption
(``kill -9`` included), so ``medley train --resume NAME`` needs nothing else:

- ``args.json``          the run's full arguments, defaults resolved (written before training starts)
- ``data.safetensors``   the prepared training images (uint8) with their captions
- ``class_images/``      cached prior-preservation images, one PNG per seed
- ``checkpoint.*``       the latest checkpoint (see :mod:`training.lora_trainer`)
- ``validation/``        validation renders, ``step-000100-0.png``
- ``result.json``        written last, when the adapter is in the library

Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from library.files import write_atomic
from library.home import medley_home
from training.images import TrainingInputError

ARGS_FILE = "args.json"
DATA_FILE = "data.safetensors"
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"
CLASS_DIR = "class_images"
VALIDATION_DIR = "validation"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def check_name(name: str) -> str:
    """A run/adapter name: letters, digits, ``.``, ``_``, ``-``; no path separators, no ``..``."""
    if not isinstance(name, str) or not name:
        raise TrainingInputError("the run needs a name (--name NAME)")
    if "/" in name or "\\" in name or ".." in name or os.sep in name or not _NAME.match(name):
        raise TrainingInputError(f"invalid name {name!r}: use up to 80 letters, digits, '.', '_' and '-', "
                                 "starting with a letter or digit (no path separators or '..')")
    return name


def runs_root() -> Path:
    return medley_home() / "runs"


def adapters_root() -> Path:
    return medley_home() / "adapters"


def run_folder(name: str) -> Path:
    return runs_root() / check_name(name)


def adapter_path(name: str) -> Path:
    return adapters_root() / f"{check_name(name)}.safetensors"


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TrainingInputError(f"cannot read {path}: {error}") from None
    if not isinstance(value, dict):
        raise TrainingInputError(f"{path} does not hold a JSON object")
    return value


def save_data(folder: Path, images: np.ndarray, captions: list[str], files: list[str]) -> Path:
    """The prepared instance images and captions (so a resumed run does not need the image folder)."""
    path = folder / DATA_FILE
    write_atomic(path, save({"images": torch.from_numpy(np.ascontiguousarray(images))},
                            metadata={"captions": json.dumps(captions), "files": json.dumps(files)}))
    return path


def load_data(folder: Path) -> tuple[np.ndarray, list[str], list[str]]:
    from safetensors import safe_open

    path = folder / DATA_FILE
    if not path.is_file():
        raise TrainingInputError(f"the run folder {folder} has no {DATA_FILE}; start the run again with --force")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    images = load_file(str(path))["images"].numpy()
    return images, json.loads(metadata.get("captions", "[]")), json.loads(metadata.get("files", "[]"))


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder for this process; a second trainer of the same run is refused."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TrainingInputError(f"the run {folder.name} is being trained by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
