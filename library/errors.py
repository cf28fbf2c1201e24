"""The errors the library raises. Every message is one line that names the file or adapter."""

from __future__ import annotations


class LibraryError(Exception):
    """Base class of every library error."""


class AdapterFileError(LibraryError, ValueError):
    """A file that cannot be read as a LoRA adapter (damaged, hostile, unsupported)."""


class PickledFileError(AdapterFileError):
    """A pickled checkpoint (.ckpt/.pt/.bin or a pickle in disguise). Never unpickled."""


class UnsupportedFamilyError(AdapterFileError):
    """Weights of an adapter family Medley does not read (OFT/BOFT, GLoRA, ...)."""


class ForeignAdapterError(AdapterFileError):
    """An adapter for another kind of model (a language model, a text or image classifier)."""


class AdapterNotFoundError(LibraryError, LookupError):
    """No catalogued adapter has that name or id."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else "adapter not found"


class DuplicateAdapterError(LibraryError):
    """The file's content is already catalogued under another name."""
