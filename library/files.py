"""Adapter files on disk: finding them safely, hashing, copying without touching the original."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from library.errors import AdapterFileError
from library.formats.header import PICKLE_SUFFIXES

ADAPTER_SUFFIX = ".safetensors"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileProblem:
    """A file that could not be catalogued, with the one-line reason."""

    path: str
    message: str


@dataclass(frozen=True)
class Candidate:
    """An adapter file found in a folder, with the names beside it (for sidecar lookups)."""

    path: Path
    listing: frozenset[str]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_within(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def check_link(path: Path, folder: Path) -> Path:
    """``path`` itself, or where its symlink points when that lies inside ``folder``; else refuse."""
    if not path.is_symlink():
        return path
    if not is_within(path, folder):
        raise AdapterFileError(f"{path.name}: is a symlink pointing outside {folder}, refused")
    return path.resolve()


def find_adapter_files(folder: Path) -> Iterator[Candidate | FileProblem]:
    """Every ``.safetensors`` under ``folder`` (hidden names skipped, folder links not followed); pickled
    files and symlinks leading out of the folder come back as problems."""
    root = Path(folder).resolve()
    for directory, subdirectories, names in os.walk(root, followlinks=False):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        listing = frozenset(names)
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(directory) / name
            suffix = path.suffix.lower()
            if suffix in PICKLE_SUFFIXES:
                yield FileProblem(str(path), f"{name}: pickled checkpoints ({suffix}) are refused, they can run "
                                             "code when loaded")
            elif suffix == ADAPTER_SUFFIX:
                if path.is_symlink() and not is_within(path, root):
                    yield FileProblem(str(path), f"{name}: is a symlink pointing outside {root}, skipped")
                else:
                    yield Candidate(path, listing)


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    candidate = folder / f"{stem}{suffix}"
    number = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{number}{suffix}"
        number += 1
    return candidate


def copy_file(source: Path, destination: Path) -> None:
    """Copy ``source`` to ``destination`` through a temp file in the destination folder, then rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".importing-", dir=destination.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then ``os.replace`` it into place,
    so readers see the old content or the new one, never a torn file. The file gets the permissions
    a plain write would give it (``mkstemp`` alone makes it owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
