"""Typed errors of zjulab-rtt.

Every error raised on purpose derives from :class:`RTTError`; each narrow class also derives
from the matching :mod:`zjulab.common.errors` class, so ``except InputError`` catches bad data
from any zjulab library.
"""

from __future__ import annotations

from zjulab.common.errors import ConfigError, InputError, NotFoundError, StoreError, ZjulabError

__all__ = [
    "DiscriminatorStoreError",
    "LabelAlignmentError",
    "RTTConfigError",
    "RTTError",
    "RubricError",
    "ShapeError",
    "UnknownCheckerError",
]


class RTTError(ZjulabError):
    """Base class of every error raised on purpose by zjulab-rtt."""


class RTTConfigError(RTTError, ConfigError):
    """A configuration field of zjulab-rtt has an invalid value (the message names it)."""


class ShapeError(RTTError, InputError):
    """Tensors handed to a normalisation or advantage function have inconsistent shapes."""


class RubricError(RTTError, InputError):
    """A rubric is malformed: empty text, an unknown kind, or bad checker arguments."""


class UnknownCheckerError(RubricError, NotFoundError):
    """A rubric names a checker that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LabelAlignmentError(RTTError, InputError):
    """Character spans cannot be aligned with a response (out of range, reversed, or not found)."""


class DiscriminatorStoreError(RTTError, StoreError):
    """A saved relevance discriminator is missing, corrupt, or of an unknown format version."""
