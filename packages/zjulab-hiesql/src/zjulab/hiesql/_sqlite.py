"""Every SQLite connection the library opens on a user's file: read-only, hardened, never creating.

* The file is opened through ``Path.as_uri()`` (``#``, ``?`` and ``%`` in names are
  percent-encoded, so the whole path reaches SQLite) with ``mode=ro``: SQLite never writes and
  never creates a file.
* ``SQLITE_DBCONFIG_DEFENSIVE`` is on (no ``writable_schema``, no shadow-table writes),
  ``SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER`` and ``SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION`` are off
  (the two-argument ``fts3_tokenizer()`` installs a tokenizer from a raw pointer: a crafted blob
  crashes the process), and ``SQLITE_DBCONFIG_TRUSTED_SCHEMA`` is off (views and triggers in a
  hostile file cannot call functions that are not marked innocuous). The sandbox's own
  connection turns it on (``trusted_schema=True``): it registers checked ``printf()``/``format()``
  that Python cannot mark innocuous, and its authorizer applies the function allow-list and the
  table-valued-function refusals inside views as well; functions SQLite marks direct-only
  (``fts3_tokenizer``, ``load_extension``, ``dbstat``...) stay refused in a view either way.

Python 3.12 exposes ``Connection.setconfig``; on 3.10/3.11 the same ``sqlite3_db_config`` calls are
made through ctypes on the connection's ``sqlite3*`` handle, checked against the file name before
use. When neither is possible the sandbox's function allow-list still refuses ``fts3_tokenizer``
and ``load_extension``.
"""

from __future__ import annotations

import ctypes
import logging
import sqlite3
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["harden", "open_readonly", "readonly_uri"]

# sqlite3.h
_DEFENSIVE = 1010
_FTS3_TOKENIZER = 1004
_LOAD_EXTENSION = 1005
_TRUSTED_SCHEMA = 1017

_SETTINGS = ((_DEFENSIVE, 1), (_FTS3_TOKENIZER, 0), (_LOAD_EXTENSION, 0))
_lib: ctypes.CDLL | bool | None = None


def readonly_uri(path: str | Path) -> str:
    """The ``file:`` URI of ``path`` with ``mode=ro`` (every special character encoded)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def _library() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        try:
            import _sqlite3

            lib = ctypes.CDLL(_sqlite3.__file__)
            lib.sqlite3_db_config.restype = ctypes.c_int
            lib.sqlite3_db_filename.restype = ctypes.c_char_p
            lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            _lib = lib
        except (ImportError, OSError, AttributeError) as exc:  # pragma: no cover - exotic builds
            logger.warning("cannot reach sqlite3_db_config (%s); relying on the function allow-list", exc)
            _lib = False
    return _lib or None


def _handle(conn: sqlite3.Connection, expected: Path | None) -> int | None:
    # CPython's connection object starts with PyObject_HEAD followed by the ``sqlite3 *db`` field
    # (3.10 and 3.11); the pointer is only used after it names the file we opened.
    if sys.implementation.name != "cpython":  # pragma: no cover
        return None
    lib = _library()
    if lib is None:  # pragma: no cover
        return None
    ptr = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not ptr:
        return None
    name = lib.sqlite3_db_filename(ptr, b"main") or b""
    want = str(expected) if expected is not None else ""
    if name.decode("utf-8", "replace") != want:
        logger.warning("unexpected SQLite handle layout; relying on the function allow-list")
        return None
    return int(ptr)


def harden(conn: sqlite3.Connection, expected: Path | None = None, trusted_schema: bool = False) -> bool:
    """Switch on DEFENSIVE and off the FTS3 tokenizer, extension loading and (by default) trusted schema.

    Args:
        conn: A fresh connection.
        expected: The resolved database path (used to check the handle on Python < 3.12).
        trusted_schema: Let views call application-defined functions (only for a connection
            whose authorizer checks every function, see the module docstring).

    Returns:
        Whether every setting was applied.
    """
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    settings = (*_SETTINGS, (_TRUSTED_SCHEMA, int(trusted_schema)))
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:  # Python >= 3.12
        for op, value in settings:
            setconfig(op, bool(value))
        return True
    ptr = _handle(conn, expected)
    if ptr is None:  # pragma: no cover
        return False
    lib = _library()
    assert lib is not None
    ok = True
    for op, value in settings:
        out = ctypes.c_int(-1)
        rc = lib.sqlite3_db_config(
            ctypes.c_void_p(ptr), ctypes.c_int(op), ctypes.c_int(value), ctypes.byref(out)
        )
        ok &= rc == 0 and out.value == value
    return ok


def open_readonly(
    path: str | Path, check_same_thread: bool = True, trusted_schema: bool = False
) -> sqlite3.Connection:
    """Open an existing SQLite file read-only and hardened (see the module docstring and :func:`harden`).

    Raises:
        sqlite3.OperationalError: When the file cannot be opened (it is never created).
    """
    resolved = Path(path).resolve()
    conn = sqlite3.connect(readonly_uri(resolved), uri=True, check_same_thread=check_same_thread)
    try:
        harden(conn, resolved, trusted_schema)
    except BaseException:
        conn.close()
        raise
    return conn
