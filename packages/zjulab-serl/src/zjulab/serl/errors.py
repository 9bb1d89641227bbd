"""Errors raised by zjulab.serl.

Every error derives from :class:`SERLError` and, where it fits, from the matching kind-wide class
of :mod:`zjulab.common.errors`, so callers can catch either.
"""

from __future__ import annotations

from zjulab.common.errors import ConfigError, InputError, RemoteModelError, StoreError, ZjulabError

__all__ = ["SERLConfigError", "SERLError", "SERLInputError", "SERLRemoteError", "SERLStoreError"]


class SERLError(ZjulabError):
    """Base class of the errors raised on purpose by zjulab.serl."""


class SERLConfigError(SERLError, ConfigError):
    """A SERL setting is invalid (the message names the field and the value)."""


class SERLInputError(SERLError, InputError):
    """Responses, verdicts or prompts handed to SERL are malformed (wrong count, index or type)."""


class SERLStoreError(SERLError, StoreError):
    """An outputs or annotations file is missing, unreadable or not in the expected format."""


class SERLRemoteError(SERLError, RemoteModelError):
    """A judge or generator left requests unanswered (the answers received are kept; see the message)."""
