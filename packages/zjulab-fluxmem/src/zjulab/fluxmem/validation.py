r"""The one text check every entry point of zjulab-fluxmem uses (Python API, server, CLI).

A Python string can hold a lone surrogate (``json.loads('"\ud800"')``, a file name decoded
with ``surrogateescape``) that UTF-8 cannot encode. Stored or sent as it is, it fails far from
where it came in (SQLite, an embedding client, the server's JSON encoder). :func:`check_text`
refuses it before anything changes, naming the field, with a :class:`MemoryInputError`.
"""

from __future__ import annotations

from typing import Any

from zjulab.common.errors import InputError
from zjulab.common.text import check_text as _common_check_text
from zjulab.fluxmem.errors import MemoryInputError

__all__ = ["check_text", "check_text_tree"]


def check_text(value: Any, where: str, *, allow_empty: bool = True) -> str:
    """``value`` if it is a string UTF-8 can encode, else :class:`MemoryInputError` naming ``where``.

    Raises:
        MemoryInputError: Not a string, empty when ``allow_empty`` is false, or holding a lone
            surrogate (the message names ``where`` and the character's position).
    """
    try:
        return _common_check_text(value, where, allow_empty=allow_empty)
    except MemoryInputError:
        raise
    except InputError as exc:
        raise MemoryInputError(str(exc)) from None


def check_text_tree(value: Any, where: str) -> None:
    """Apply :func:`check_text` to every string (keys included) inside lists and dicts.

    Raises:
        MemoryInputError: A string in ``value`` cannot be encoded (named by its path).
    """
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    check_text(k, f"{path} key {k!r}")
                stack.append((v, f"{path}[{k!r}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
