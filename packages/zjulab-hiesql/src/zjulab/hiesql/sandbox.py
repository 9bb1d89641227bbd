"""A read-only SQLite sandbox for executing generated SQL.

Four layers of protection, each enough on its own for the case it covers:

* the file is opened through a read-only URI (``mode=ro``), so SQLite refuses any write;
* an authorizer allows only reading actions (SELECT, reading columns, calling functions other
  than ``load_extension``, recursive CTEs, and PRAGMAs from a list of read-only ones such as
  ``table_info``); INSERT/UPDATE/DELETE, CREATE/DROP/ALTER, ATTACH/DETACH, transactions and PRAGMA
  assignments are denied;
* extension loading is switched off on the connection;
* a progress handler aborts a statement that runs past the time limit, and results are capped
  in rows and in bytes.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from zjulab.hiesql.config import SandboxConfig
from zjulab.hiesql.errors import SandboxError, SandboxLimitError, SandboxPermissionError, SchemaFileError

logger = logging.getLogger(__name__)

__all__ = ["ExecutionResult", "SQLiteSandbox"]

_READ_ONLY_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "foreign_key_list",
        "index_list",
        "index_info",
        "table_list",
        "database_list",
    }
)
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_ACTION_NAMES = {v: k for k, v in vars(sqlite3).items() if k.startswith("SQLITE_") and isinstance(v, int)}


@dataclass(frozen=True)
class ExecutionResult:
    """Rows returned by one statement.

    Args:
        columns: Column names of the result.
        rows: The rows (at most ``max_rows``).
        truncated: Whether more rows existed than were kept.
        seconds: Wall time spent executing and fetching.
    """

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool
    seconds: float


class SQLiteSandbox:
    """Execute read-only SQL against a SQLite file with time, row and size limits.

    Args:
        path: The SQLite database file (must exist; it is never modified).
        config: Limits; defaults to :class:`~zjulab.hiesql.config.SandboxConfig()`.

    Raises:
        SchemaFileError: When the file does not exist.

    Example:
        >>> with SQLiteSandbox("shop.sqlite") as box:  # doctest: +SKIP
        ...     box.execute("SELECT count(*) FROM product").rows
        [(12,)]
    """

    def __init__(self, path: str | Path, config: SandboxConfig | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SchemaFileError(f"database file not found: {self.path}")
        self.config = config or SandboxConfig()
        self._conn: sqlite3.Connection | None = None
        self._denied: str | None = None
        self._deadline = 0.0

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._progress, self.config.progress_steps)
        if hasattr(conn, "setlimit"):  # Python >= 3.11
            conn.setlimit(getattr(sqlite3, "SQLITE_LIMIT_ATTACHED"), 0)  # noqa: B009 - absent before 3.11
            conn.setlimit(getattr(sqlite3, "SQLITE_LIMIT_LENGTH"), max(1000, self.config.max_bytes))  # noqa: B009
        self._conn = conn
        return conn

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trig: str | None
    ) -> int:
        if action in _ALLOWED:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
                self._denied = "load_extension()"
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_ONLY_PRAGMAS:
            return sqlite3.SQLITE_OK
        name = _ACTION_NAMES.get(action, str(action)).removeprefix("SQLITE_")
        self._denied = f"{name} {arg1 or ''}".strip()
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def close(self) -> None:
        """Close the connection (the sandbox can be used again; it reconnects)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SQLiteSandbox:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- execution --------------------------------------------------------------------------------
    def execute(self, sql: str, max_rows: int | None = None) -> ExecutionResult:
        """Run one read-only statement.

        Args:
            sql: The statement.
            max_rows: Override of the configured row cap.

        Returns:
            The rows and column names.

        Raises:
            SandboxPermissionError: The statement tries to write, attach, change a PRAGMA or
                load an extension, or holds more than one statement.
            SandboxLimitError: It ran past the time limit, or the result exceeded the byte cap
                (or the row cap with ``on_row_limit="raise"``).
            SandboxError: Any other SQLite error (syntax, unknown column...).
        """
        conn = self._connect()
        cap = self.config.max_rows if max_rows is None else max_rows
        self._denied = None
        start = time.monotonic()
        self._deadline = start + self.config.timeout_s
        cur = conn.cursor()
        try:
            cur.execute(sql)
            rows: list[tuple[Any, ...]] = []
            size = 0
            truncated = False
            while True:
                batch = cur.fetchmany(256)
                if not batch:
                    break
                for row in batch:
                    if len(rows) >= cap:
                        truncated = True
                        break
                    size += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)
                    if size > self.config.max_bytes:
                        raise SandboxLimitError(
                            f"result exceeds {self.config.max_bytes} bytes: {sql[:200]!r}"
                        )
                    rows.append(tuple(row))
                if truncated:
                    break
            columns = tuple(d[0] for d in (cur.description or ()))
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if "one statement" in msg:
                raise SandboxPermissionError(f"only one statement may run at a time: {sql[:200]!r}") from exc
            if self._denied is not None or "not authorized" in msg or "readonly" in msg:
                what = self._denied or msg
                raise SandboxPermissionError(f"sandbox refused {what!r} in {sql[:200]!r}") from exc
            if "interrupted" in msg:
                raise SandboxLimitError(
                    f"statement stopped after the {self.config.timeout_s:g}s time limit: {sql[:200]!r}"
                ) from exc
            raise SandboxError(f"SQLite error {msg!r} in {sql[:200]!r}") from exc
        except sqlite3.Warning as exc:  # "You can only execute one statement at a time." on some versions
            raise SandboxPermissionError(f"only one statement may run at a time: {sql[:200]!r}") from exc
        finally:
            cur.close()
        if truncated and self.config.on_row_limit == "raise":
            raise SandboxLimitError(f"result has more than {cap} rows: {sql[:200]!r}")
        return ExecutionResult(columns, rows, truncated, time.monotonic() - start)
