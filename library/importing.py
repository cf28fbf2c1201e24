"""Putting an imported file and its sidecars into MEDLEY_HOME/adapters without ever leaving half of it.

Each file is first copied into a temp file that this process holds locked (:func:`staged`); once the
copy is checked, :func:`publish` gives every temp its final name with a hard link, which never replaces
an existing file, while the caller holds the catalogue's write transaction. The temp names go only after
the row is committed, so a process killed at any point leaves either a catalogued copy or dead temp files,
and :func:`library.files.sweep_temporaries` removes those together with any name they were linked to
that no catalogue row claims.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from library.files import ADAPTER_SUFFIX, copy_to_temporary, held_temporary
from library.sidecars import SIDECAR_SUFFIXES

STAGE_PREFIX = ".importing-"
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK})


@dataclass(frozen=True)
class StagedFile:
    """A file copied into a held temp file of the adapters folder, waiting for its name."""

    suffix: str  # ".safetensors", or the sidecar suffix the published copy will have
    source: Path
    temp: Path


@contextmanager
def staged(folder: Path, files: Mapping[str, Path]) -> Iterator[list[StagedFile]]:
    """Copy each ``{suffix: source}`` into a held temp file of ``folder``; the temps go when the context ends."""
    with ExitStack() as stack:
        result: list[StagedFile] = []
        for suffix, source in files.items():
            fd, temp = stack.enter_context(held_temporary(folder, prefix=STAGE_PREFIX))
            copy_to_temporary(source, fd)
            result.append(StagedFile(suffix, Path(source), temp))
        yield result


def _link(temp: Path, target: Path) -> None:
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if target.exists():  # a file system without hard links: a rename, checked first (under the write lock)
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.replace(temp, target)


def publish(folder: Path, stem: str, files: list[StagedFile], taken: Callable[[Path], bool]) -> dict[str, Path]:
    """Link every staged file to ``<stem><suffix>`` in ``folder`` (``<stem>-2<suffix>``... when any of the
    names exists or is ``taken`` by a catalogue row); returns ``{suffix: published path}``."""
    number = 1
    while True:
        name = stem if number == 1 else f"{stem}-{number}"
        number += 1
        targets = {item.suffix: folder / f"{name}{item.suffix}" for item in files}
        if any(path.exists() or path.is_symlink() or taken(path) for path in targets.values()):
            continue
        linked: list[Path] = []
        try:
            for item in files:
                _link(item.temp, targets[item.suffix])
                linked.append(targets[item.suffix])
        except FileExistsError:  # another writer took a name in the meantime: try the next one
            for path in linked:
                path.unlink(missing_ok=True)
            continue
        except BaseException:
            for path in linked:
                path.unlink(missing_ok=True)
            raise
        return targets


def main_file_of(path: Path) -> list[Path]:
    """The adapter files ``path`` may belong to: itself, or ``<stem>.safetensors`` of a sidecar's name."""
    candidates = [path] if path.name.endswith(ADAPTER_SUFFIX) else []
    for suffix in SIDECAR_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            candidates.append(path.with_name(path.name.removesuffix(suffix) + ADAPTER_SUFFIX))
    return candidates
