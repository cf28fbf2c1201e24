"""Errors a user can act on become a gr.Error (a toast in the page, an error for API clients)."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator

import gradio as gr


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Re-raise input and library errors as :class:`gr.Error` with their one-line message (escaped:
    gr.Error renders HTML, and messages quote user text such as ``<lora:...>``)."""
    from library.errors import LibraryError

    try:
        yield
    except gr.Error:
        raise
    except (ValueError, LookupError, LibraryError, FileNotFoundError) as error:
        raise gr.Error(html.escape(str(error)), print_exception=False) from error
