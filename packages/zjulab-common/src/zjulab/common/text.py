r"""Checks on text that will be sent to a server, stored or indexed.

Python strings can hold lone surrogates (``"\ud800"``, e.g. from ``json.loads`` of an escaped
half pair, or ``surrogateescape``-decoded file names) that cannot be encoded as UTF-8. Left
alone they fail far from where they came in, with a ``UnicodeEncodeError`` inside an HTTP
client, a JSON writer or SQLite. :func:`check_text` refuses them at the door, naming the value.
"""

from __future__ import annotations

from typing import Any

from zjulab.common.errors import InputError

__all__ = ["check_text"]


def check_text(value: Any, where: str, *, allow_empty: bool = True) -> str:
    """Return ``value`` if it is a string that encodes as UTF-8, else raise :class:`InputError`.

    Args:
        value: The value to check.
        where: What the value is, for the message (``"conversation 0 message 1"``).
        allow_empty: Whether ``""`` is accepted.

    Raises:
        InputError: Not a string, empty when ``allow_empty`` is false, or holding a character
            that UTF-8 cannot encode (a lone surrogate); the message names ``where`` and the
            character's position.
    """
    if not isinstance(value, str):
        raise InputError(f"{where}: expected a string, got {type(value).__name__}")
    if not allow_empty and not value:
        raise InputError(f"{where}: empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start : exc.end]
        raise InputError(
            f"{where}: character {exc.start} ({bad.encode('unicode_escape').decode('ascii')}) is a lone "
            "surrogate, which UTF-8 cannot encode; the text was probably decoded wrongly"
        ) from None
    return value
