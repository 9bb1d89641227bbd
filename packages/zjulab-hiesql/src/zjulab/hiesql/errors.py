"""Typed errors of zjulab-hiesql; each also derives from the matching zjulab.common class."""

from __future__ import annotations

from zjulab.common.errors import ConfigError, InputError, NotFoundError, StoreError, ZjulabError

__all__ = [
    "HieSqlConfigError",
    "HieSqlError",
    "InvalidSQLError",
    "SQLParseError",
    "SandboxError",
    "SandboxLimitError",
    "SandboxPermissionError",
    "SchemaFileError",
    "ParserStoreError",
    "UnknownDatabaseError",
]


class HieSqlError(ZjulabError):
    """Base class of every error raised by zjulab-hiesql."""


class HieSqlConfigError(HieSqlError, ConfigError):
    """A configuration value is out of range or inconsistent."""


class UnknownDatabaseError(HieSqlError, NotFoundError):
    """A ``db_id`` is not among the loaded schemas."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class SchemaFileError(HieSqlError, InputError):
    """A ``tables.json``, interaction or gold/prediction file is malformed (message names file and line)."""


class SQLParseError(HieSqlError, InputError):
    """A SQL string cannot be parsed into the Spider structure used by the evaluator."""


class InvalidSQLError(HieSqlError, InputError):
    """A SQL string is not valid against a schema (sqlglot parse or unknown table/column)."""


class SandboxError(HieSqlError):
    """Execution in the SQLite sandbox failed."""


class SandboxPermissionError(SandboxError, InputError):
    """The sandbox refused a statement (write, ATTACH, PRAGMA change, extension loading)."""


class SandboxLimitError(SandboxError):
    """The statement exceeded the sandbox's time, row or size limit."""


class ParserStoreError(HieSqlError, StoreError):
    """A saved parser directory is missing files or has an unsupported format version."""
