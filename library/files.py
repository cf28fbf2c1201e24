"""Adapter files on disk: finding them safely, hashing, copying without touching the original.

Every file Medley writes goes through a temp file in the destination folder that the writing process
holds locked (:func:`held_temporary`); the finished file is renamed or linked into place. A process
killed half-way leaves only an unlocked temp file, which :func:`sweep_temporaries` removes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from library.errors import AdapterFileError
from library.formats.header import PICKLE_SUFFIXES

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: temp files are not locked, nor swept
    fcntl = None  # type: ignore[assignment]

ADAPTER_SUFFIX = ".safetensors"
TEMP_SUFFIX = ".tmp"
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


@contextmanager
def held_temporary(folder: Path, prefix: str = ".medley-") -> Iterator[tuple[int, Path]]:
    """A new, empty temp file in ``folder`` (``<prefix>XXXX.tmp``), locked by this process until the
    context ends, when its name is removed. While the lock is held :func:`sweep_temporaries` in any
    process leaves the file alone; once the process is gone (``kill -9`` included) it is swept."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=folder)
        _lock(fd, wait=True)
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)  # a sweep removed it in the instant before it was locked: take another
    path = Path(name)
    try:
        yield fd, path
    finally:
        path.unlink(missing_ok=True)  # before the lock goes, so no sweep ever sees it unlocked
        os.close(fd)


def copy_to_temporary(source: Path, fd: int) -> None:
    """Copy ``source`` into the open temp file ``fd`` (from :func:`held_temporary`), with the permissions
    a plain copy would get."""
    with Path(source).open("rb") as reader, open(fd, "wb", closefd=False) as writer:
        shutil.copyfileobj(reader, writer, _CHUNK)
        os.fchmod(fd, 0o666 & ~_umask())


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a held temp file beside ``path``, fsync it, then ``os.replace`` it into place,
    so readers see the old content or the new one, never a torn file, and a writer killed half-way
    leaves only a temp file that the next sweep removes. The file gets the permissions a plain write
    would give it (``mkstemp`` alone makes it owner-only)."""
    path = Path(path)
    with held_temporary(path.parent, prefix=f".{path.name}.") as (fd, temp):
        with open(fd, "wb", closefd=False) as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(fd, 0o666 & ~_umask())
            os.fsync(fd)
        os.replace(temp, path)


def sweep_temporaries(folder: Path, keep: Callable[[Path], bool] = lambda _path: False) -> list[Path]:
    """Remove the temp files (``.*.tmp``, and ``.importing-*`` of older versions) that dead processes
    left in ``folder``; live writers hold a lock on theirs and are skipped. A dead temp that still has
    other names (hard links it published before its process died) takes those names with it unless
    ``keep(name)``. Returns the paths removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if fcntl is None or not folder.is_dir():
        return removed
    entries = list(os.scandir(folder))
    for entry in entries:
        if not _is_temporary(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            status = os.fstat(fd)
            if not _lock(fd, wait=False) or os.stat(entry.path, follow_symlinks=False).st_ino != status.st_ino:
                continue
            if status.st_nlink > 1:
                for other in entries:
                    if (other.name != entry.name and other.inode() == status.st_ino
                            and not keep(Path(other.path))):
                        Path(other.path).unlink(missing_ok=True)
                        removed.append(Path(other.path))
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and (name.endswith(TEMP_SUFFIX) or name.startswith(".importing-"))


def _lock(fd: int, wait: bool) -> bool:
    """An exclusive flock on ``fd``; without ``wait``, False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@cache
def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it back
    would, for that instant, let another thread create a world-writable file)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask
