"""Errors raised by zjulab-fluxmem.

Every error derives from :class:`FluxMemError` and from the matching kind-wide class of
:mod:`zjulab.common.errors`, so callers can catch either.
"""

from __future__ import annotations

from zjulab.common.errors import (
    ConfigError,
    IndexMismatchError,
    InputError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
    ZjulabError,
)

__all__ = [
    "DatasetError",
    "FluxMemConfigError",
    "FluxMemError",
    "FluxStoreEncoderError",
    "FluxStoreError",
    "FluxStoreIndexError",
    "FluxStoreVersionError",
    "MemoryInputError",
    "MemoryNotFoundError",
    "ScopeError",
]


class FluxMemError(ZjulabError):
    """Base class of every error raised on purpose by zjulab-fluxmem."""


class FluxMemConfigError(FluxMemError, ConfigError):
    """A configuration value is out of range or inconsistent."""


class MemoryInputError(FluxMemError, InputError):
    """Messages, queries or filters passed to the memory are malformed."""


class ScopeError(MemoryInputError):
    """A call names no scope (``user_id``, ``agent_id`` or ``run_id``), or crosses scopes."""


class MemoryNotFoundError(FluxMemError, NotFoundError):
    """No memory node has the given id (in the given scope)."""


class FluxStoreError(FluxMemError, StoreError):
    """A memory store directory is missing, unreadable or inconsistent."""


class FluxStoreVersionError(FluxStoreError, SchemaVersionError):
    """A memory store was written by an incompatible format version."""


class FluxStoreIndexError(FluxStoreError, IndexMismatchError):
    """A stored vector index does not match the stored nodes."""


class DatasetError(FluxMemError, InputError):
    """An evaluation data file is missing or not of the expected shape."""


class FluxStoreEncoderError(FluxStoreIndexError):
    """A store was embedded with another encoder (name or dimension) than the one given."""
