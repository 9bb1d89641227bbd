"""Typed errors of zjulab-skillrouter.

Every error derives from :class:`SkillRouterError` and from the matching kind-wide class of
:mod:`zjulab.common.errors`, so callers may catch either.
"""

from __future__ import annotations

from zjulab.common.errors import IndexMismatchError, InputError, StoreError, ZjulabError

__all__ = [
    "DuplicateSkillError",
    "EmptyPoolError",
    "EncoderMismatchError",
    "IndexExistsError",
    "IndexFormatError",
    "IndexIntegrityError",
    "InvalidKError",
    "InvalidSkillError",
    "NotAnIndexError",
    "NotIndexedError",
    "SkillParseError",
    "SkillRouterError",
]


class SkillRouterError(ZjulabError):
    """Base class of every error raised on purpose by zjulab-skillrouter."""


class InvalidSkillError(SkillRouterError, InputError):
    """A skill record is unusable (empty name or body, wrong field type)."""


class DuplicateSkillError(SkillRouterError, InputError):
    """Two skills in one pool share an id."""


class EmptyPoolError(SkillRouterError, InputError):
    """A pool, task list or training set is empty."""


class InvalidKError(SkillRouterError, InputError):
    """``k`` is not positive or exceeds the number of indexed skills."""


class SkillParseError(SkillRouterError, InputError):
    """A ``SKILL.md`` or JSONL file cannot be read; the message names the file and line.

    Attributes:
        path: The offending file.
        line: 1-based line number, or ``None`` when the whole file is at fault.
    """

    def __init__(self, message: str, path: str = "", line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.line = line


class NotIndexedError(SkillRouterError, RuntimeError):
    """``route`` was called before ``index``."""


class IndexFormatError(SkillRouterError, StoreError):
    """A saved router directory is missing files or is corrupt."""


class EncoderMismatchError(SkillRouterError, IndexMismatchError):
    """A saved index was built with a different encoder (or dimension) than the one given."""


class IndexIntegrityError(IndexFormatError):
    """A saved index's skills no longer match the hashes recorded at save time (edited, shuffled)."""


class IndexExistsError(SkillRouterError, StoreError):
    """``save`` would replace an existing index; pass ``overwrite=True`` (CLI ``--overwrite``)."""


class NotAnIndexError(SkillRouterError, StoreError):
    """``save`` was pointed at a folder that holds files but no index this library wrote.

    The folder is never deleted or replaced, whatever ``overwrite`` says.
    """
