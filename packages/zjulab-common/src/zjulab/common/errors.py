"""Typed errors shared by every zjulab library.

Each library defines its own base class deriving from :class:`ZjulabError` (for example
``SkillRouterError(ZjulabError)``) and narrow subclasses that also derive from the matching
class here, so users can catch either the library-wide or the kind-wide error.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "IncompleteAnswerError",
    "ConfigError",
    "DeviceNotAvailableError",
    "IndexMismatchError",
    "InputError",
    "MissingDependencyError",
    "ModelNotAvailableError",
    "NotFoundError",
    "RemoteModelError",
    "SchemaVersionError",
    "SerializationError",
    "StoreError",
    "StructuredOutputError",
    "ZjulabError",
]


class ZjulabError(Exception):
    """Base class of every error raised on purpose by a zjulab library."""


class ConfigError(ZjulabError, ValueError):
    """A configuration value is invalid (the message names the field and the value)."""


class InputError(ZjulabError, ValueError):
    """User-supplied data is malformed: empty, duplicated, of the wrong type or shape."""


class NotFoundError(ZjulabError, KeyError):
    """A named object (record id, node, database, file) does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class DeviceNotAvailableError(ZjulabError, RuntimeError):
    """The requested device (``cuda:1``, ``mps``...) is not present on this machine."""


class ModelNotAvailableError(ZjulabError, OSError):
    """A model is neither cached locally nor reachable; the message says how to obtain it."""


class RemoteModelError(ZjulabError, RuntimeError):
    """A served model (OpenAI-compatible endpoint) failed after every retry."""


class IncompleteAnswerError(ZjulabError, RuntimeError):
    """Answers were cut off, filtered or empty, and the policy for that case is ``"raise"``.

    Attributes:
        results: Every :class:`~zjulab.common.chat.ChatResult` of the call, in order (nothing received is lost).
        indices: Positions of the offending answers.
        reason: ``"length"``, ``"content_filter"`` or ``"empty"``.
    """

    def __init__(self, message: str, results: list[Any], indices: list[int], reason: str) -> None:
        super().__init__(message)
        self.results = results
        self.indices = indices
        self.reason = reason


class StructuredOutputError(ZjulabError, ValueError):
    """A model's answer could not be turned into the requested structure.

    Attributes:
        raw: The last raw text the model produced.
        attempts: How many answers were tried.
    """

    def __init__(self, message: str, raw: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


class StoreError(ZjulabError, OSError):
    """A persisted store is missing, corrupt or was written by an incompatible version."""


class SchemaVersionError(StoreError):
    """A persisted file declares a format version this library cannot read."""


class IndexMismatchError(StoreError):
    """A persisted index was built with a different model or configuration than requested."""


class MissingDependencyError(ZjulabError, ImportError):
    """An optional dependency (an extra) is not installed; the message names the install line.

    Attributes:
        module: The import name that failed (``"torch"``).
        install: The exact command that installs it (``pip install 'zjulab-hiesql[torch]'``).
    """

    def __init__(self, module: str, install: str, feature: str = "") -> None:
        what = f"{feature} needs" if feature else "this needs"
        super().__init__(f"{what} {module!r}, which is not installed; install it with: {install}")
        self.module = module
        self.install = install
        self.name = module


class SerializationError(InputError, TypeError):
    """A value cannot be written in the requested format (a ``date`` or an object in JSON).

    The message names the file and the value's type.
    """
