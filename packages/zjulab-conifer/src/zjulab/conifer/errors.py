"""Errors raised by zjulab.conifer.

Every error derives from :class:`ConiferError` and, where one fits, from the matching
``zjulab.common`` class, so ``except InputError`` and ``except ConiferError`` both work.
"""

from __future__ import annotations

from zjulab.common.errors import ConfigError, InputError, NotFoundError, StoreError, ZjulabError

__all__ = [
    "CheckpointError",
    "ConiferConfigError",
    "ConiferError",
    "ConiferInputError",
    "InstructionArgumentError",
    "UnknownInstructionError",
]


class ConiferError(ZjulabError):
    """Base class of every error raised on purpose by zjulab.conifer."""


class ConiferConfigError(ConiferError, ConfigError):
    """A pipeline or stage setting is invalid (the message names the field and the value)."""


class ConiferInputError(ConiferError, InputError):
    """Seed queries, records, responses or evaluation files are malformed."""


class UnknownInstructionError(ConiferError, NotFoundError):
    """A constraint checker id is not in the registry."""


class InstructionArgumentError(ConiferInputError):
    """A constraint checker was given missing or invalid keyword arguments.

    The message names the instruction id and the argument.
    """


class CheckpointError(ConiferError, StoreError):
    """A stage checkpoint is corrupt or belongs to a different pipeline configuration."""
