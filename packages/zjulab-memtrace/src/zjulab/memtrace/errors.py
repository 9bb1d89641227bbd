"""Typed errors of zjulab-memtrace.

Every error derives from :class:`MemTraceError` and from the matching
:mod:`zjulab.common.errors` class, so callers can catch either.
"""

from __future__ import annotations

from zjulab.common.errors import (
    InputError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
    ZjulabError,
)

__all__ = [
    "CycleError",
    "DanglingVariableError",
    "MemTraceError",
    "OutputExistsError",
    "ReplayError",
    "TraceFileError",
    "TraceSchemaError",
    "TracingError",
]


class MemTraceError(ZjulabError):
    """Base class of every error raised on purpose by zjulab-memtrace."""


class TracingError(MemTraceError, InputError):
    """An operation or variable cannot be recorded (bad name, variable produced twice...)."""


class CycleError(TracingError):
    """Adding an operation would close a cycle in the evolution graph (it must stay a DAG)."""


class DanglingVariableError(MemTraceError, NotFoundError):
    """An operation or the trace refers to a variable or operation id that does not exist."""


class ReplayError(MemTraceError, InputError):
    """An operation cannot be re-executed (no handle, bad override, the handle raised)."""


class TraceFileError(MemTraceError, StoreError):
    """A trace file is missing, not JSON, or structurally invalid."""


class TraceSchemaError(MemTraceError, SchemaVersionError):
    """A trace file declares a schema version this library cannot read."""


class OutputExistsError(MemTraceError, InputError):
    """An output path is a folder or a file this library did not write; it is never replaced."""
