"""Keep the libraries' load chatter out of Medley's output; ``medley --verbose`` shows it again.

Loading the embedded base makes transformers print things that are expected and tell a user
nothing: a BertModel load report (the pooler weights are skipped on purpose: the toy base uses
token states, not the pooled vector) and a progress bar over a load that takes a tenth of a second.
Loading another base makes diffusers warn that ``torch_dtype=`` is deprecated, an argument Medley
passes so that older diffusers releases keep working. Each is muted where it arises, with the
libraries' own switches (their logging verbosity and progress-bar flags around the load;
:func:`warnings.filterwarnings` on one message and category), never by silencing a stream.
Anything else they print still shows.

Verbose mode (``medley --verbose``: :func:`set_verbose`, or ``MEDLEY_VERBOSE=1`` in the environment)
turns the muting off everywhere. The module sits in ``library/`` (like :mod:`library.home`) because
every layer may use it and it must import nothing heavy: the CLI reads it before it knows whether a
command will need torch at all.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Iterator, Sequence

VERBOSE_ENV = "MEDLEY_VERBOSE"
_verbose: bool | None = None  # None: follow the environment

# diffusers >= 0.36 renamed ``torch_dtype=`` to ``dtype=``; Medley passes the old name, which every
# diffusers it supports (>= 0.32) accepts. The warning asks users to change code that is not theirs.
TORCH_DTYPE_DEPRECATION = r"`torch_dtype` is deprecated"


def set_verbose(on: bool | None) -> None:
    """Show (True) or mute (False) the library messages this module filters, for this process;
    None: as ``MEDLEY_VERBOSE`` says."""
    global _verbose
    _verbose = None if on is None else bool(on)


def is_verbose() -> bool:
    if _verbose is not None:
        return _verbose
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _ignore_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=TORCH_DTYPE_DEPRECATION, category=FutureWarning)


def filter_known_warnings() -> None:
    """Install the process-wide warning filters for messages Medley knows to be noise (not in verbose mode)."""
    if not is_verbose():
        _ignore_known_warnings()


@contextlib.contextmanager
def known_warnings_muted() -> Iterator[None]:
    """The same filters for one block only (around a library call that raises them), then the old filters."""
    with warnings.catch_warnings():
        if not is_verbose():
            _ignore_known_warnings()
        yield


@contextlib.contextmanager
def quiet_loading(libraries: Sequence[str] = ("transformers", "diffusers")) -> Iterator[None]:
    """Around a model load whose reports are expected: the named libraries (transformers, diffusers) log
    errors only and draw no progress bars until the block ends; then their settings are put back."""
    if is_verbose():
        yield
        return
    saved = []
    for library in libraries:
        if library not in ("transformers", "diffusers"):
            raise ValueError(f"quiet_loading knows transformers and diffusers, not {library!r}")
        module = importlib.import_module(f"{library}.utils.logging")
        saved.append((module, module.get_verbosity(), module.is_progress_bar_enabled()))
    for module, _, _ in saved:
        module.set_verbosity_error()
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, verbosity, bars in saved:
            module.set_verbosity(verbosity)
            if bars:
                module.enable_progress_bar()
