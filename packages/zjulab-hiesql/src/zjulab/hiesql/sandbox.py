"""A read-only SQLite sandbox for executing generated SQL (attacker-controlled input).

Layers of protection, each enough on its own for the case it covers:

* the file is opened through an encoded read-only URI (``Path.as_uri()`` + ``mode=ro``), so
  SQLite refuses any write and never creates a file;
* the connection is hardened: ``SQLITE_DBCONFIG_DEFENSIVE`` on; the FTS3 tokenizer, extension
  loading and trusted schema off (see :mod:`zjulab.hiesql._sqlite`);
* an authorizer allows only reading actions (SELECT, reading columns, recursive CTEs, PRAGMAs
  from a list of read-only ones such as ``table_info``) and calls of functions from an
  allow-list (core scalar, aggregate, window, date, math and JSON functions; never
  ``fts3_tokenizer``, ``load_extension``, FTS/R-tree internals, ``randomblob``/``zeroblob``);
  INSERT/UPDATE/DELETE, CREATE/DROP/ALTER, ATTACH/DETACH, transactions and PRAGMA assignments are
  denied and named in the error;
* table-valued functions: ``json_each``/``json_tree`` and the ``pragma_*`` forms of the
  read-only PRAGMAs are allowed; every other eponymous virtual table (``dbstat``,
  ``sqlite_stmt``...) and PRAGMA is refused under its own name;
* a progress handler aborts a statement that runs past the time limit; results are capped in
  rows and in the memory their Python objects take (``sys.getsizeof``, not string length), and
  one value in ``max_cell_bytes``. Nothing over a limit comes back as a wrong value: SQLite's
  ``printf()``/``format()`` return NULL when their output is too long, so both are replaced by
  a checked version that raises :class:`SandboxLimitError` instead;
* by default (``SandboxConfig(isolation="process")``) the statement runs in a worker process
  with CPU-time and address-space rlimits, killed at the wall-clock deadline: this also bounds
  work inside one SQLite opcode or in preparing a statement (a long ``LIKE``, a sort, a view
  nested into millions of references), which no progress handler sees. ``"in_process"`` keeps
  every layer above except that hard bound.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import re
import select
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from zjulab.hiesql._sqlite import open_readonly
from zjulab.hiesql.config import SandboxConfig
from zjulab.hiesql.errors import SandboxError, SandboxLimitError, SandboxPermissionError, SchemaFileError

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ALLOWED_TABLE_FUNCTIONS",
    "AUTHORIZER_ACTIONS",
    "ExecutionResult",
    "READ_SANDBOX",
    "SQLiteSandbox",
    "row_bytes",
]

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

#: Functions generated SQL may call (lower case). Everything else is refused by the authorizer.
ALLOWED_FUNCTIONS = frozenset(
    {
        # aggregates and window functions
        "avg", "count", "group_concat", "max", "min", "sum", "total", "string_agg",
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value",
        # scalar core
        "abs", "char", "coalesce", "format", "glob", "hex", "ifnull", "iif", "instr", "length",
        "like", "likelihood", "likely", "lower", "ltrim", "nullif", "printf", "quote", "random",
        "replace", "round", "rtrim", "sign", "soundex", "substr", "substring", "trim", "typeof",
        "unicode", "unlikely", "upper", "concat", "concat_ws", "octet_length", "unhex",
        "sqlite_version",
        # date and time
        "date", "time", "datetime", "julianday", "strftime", "unixepoch", "timediff",
        "current_date", "current_time", "current_timestamp",
        # math
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh",
        "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power",
        "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
        # JSON
        "json", "json_array", "json_array_length", "json_extract", "json_group_array",
        "json_group_object", "json_insert", "json_object", "json_patch", "json_quote",
        "json_remove", "json_replace", "json_set", "json_type", "json_valid", "->", "->>",
    }
)  # fmt: skip

#: Eponymous virtual tables (table-valued functions) generated SQL may read, besides the
#: ``pragma_*`` forms of the PRAGMAs in ``_READ_ONLY_PRAGMAS``.
ALLOWED_TABLE_FUNCTIONS = frozenset({"json_each", "json_tree"})
#: Schema tables SQLite asks UPDATE permission for while it declares an eponymous virtual table
#: (``SELECT * FROM json_each(...)``); a real UPDATE of them is refused by SQLite itself
#: ("may not be modified") before the authorizer is asked, and the connection is read-only.
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})

#: The authorizer's action codes (sqlite3.h), named for refusal messages. A reverse lookup of
#: every ``sqlite3.SQLITE_*`` constant would collide with the ``SQLITE_LIMIT_*`` numbers.
AUTHORIZER_ACTIONS = {
    0: "COPY",
    1: "CREATE_INDEX",
    2: "CREATE_TABLE",
    3: "CREATE_TEMP_INDEX",
    4: "CREATE_TEMP_TABLE",
    5: "CREATE_TEMP_TRIGGER",
    6: "CREATE_TEMP_VIEW",
    7: "CREATE_TRIGGER",
    8: "CREATE_VIEW",
    9: "DELETE",
    10: "DROP_INDEX",
    11: "DROP_TABLE",
    12: "DROP_TEMP_INDEX",
    13: "DROP_TEMP_TABLE",
    14: "DROP_TEMP_TRIGGER",
    15: "DROP_TEMP_VIEW",
    16: "DROP_TRIGGER",
    17: "DROP_VIEW",
    18: "INSERT",
    19: "PRAGMA",
    20: "READ",
    21: "SELECT",
    22: "TRANSACTION",
    23: "UPDATE",
    24: "ATTACH",
    25: "DETACH",
    26: "ALTER_TABLE",
    27: "REINDEX",
    28: "ANALYZE",
    29: "CREATE_VTABLE",
    30: "DROP_VTABLE",
    31: "FUNCTION",
    32: "SAVEPOINT",
    33: "RECURSIVE",
}
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
_PRINTF_SPEC = re.compile(r"%[-+ 0#!,]*(\*|\d+)?(?:\.(\*|\d+))?(?:ll|l)?([a-zA-Z%])")
_TUPLE_BASE = sys.getsizeof(())
_PTR = struct.calcsize("P")


def _as_int(value: Any) -> int:
    # how SQLite reads a ``*`` width or precision argument (leading number of a text; 0 else)
    if isinstance(value, (int, float)):
        if value != value:  # NaN
            return 0
        return int(value) if abs(value) < 1e18 else 10**18
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    m = re.match(r"\s*([-+]?\d+)", text)
    return int(m.group(1)) if m else 0


def row_bytes(row: tuple[Any, ...]) -> int:
    """Memory a fetched row takes in Python: the tuple, its values and the list slot holding it."""
    return _TUPLE_BASE + _PTR * (len(row) + 1) + sum(sys.getsizeof(v) for v in row)


@dataclass(frozen=True)
class ExecutionResult:
    """Rows returned by one statement.

    Args:
        columns: Column names of the result.
        rows: The rows (at most ``max_rows``, and at most ``max_bytes`` of Python memory).
        truncated: Whether more rows existed than were kept.
        seconds: Wall time spent executing and fetching.
        nbytes: Memory the kept rows take (see :func:`row_bytes`).
    """

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool
    seconds: float
    nbytes: int = 0


#: Limits of the library's own reads of a user's database (the schema, values for linking):
#: the same sandbox as generated SQL, in a worker process killed at the deadline, with caps on
#: rows and value length; callers check ``truncated`` and never use a cut result as complete.
READ_SANDBOX = SandboxConfig(
    timeout_s=5.0,
    max_rows=1_000_000,
    max_bytes=256_000_000,
    max_cell_bytes=1_000_000,
    on_row_limit="truncate",
    isolation="process",
)


class _Engine:
    """One hardened connection with the authorizer and the time check (used in both modes)."""

    def __init__(self, path: Path, config: SandboxConfig) -> None:
        self.path = path
        self.config = config
        self.functions = ALLOWED_FUNCTIONS | {f.lower() for f in config.extra_functions}
        self._conn: sqlite3.Connection | None = None
        self._fmt: sqlite3.Connection | None = None
        self._modules: set[str] = set()
        self._denied: str | None = None
        self._too_big: str | None = None
        self._deadline = 0.0

    def connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                # trusted schema on: the checked printf()/format() registered below must work in
                # the file's views; the authorizer checks every function and table there too
                conn = open_readonly(self.path, check_same_thread=False, trusted_schema=True)
            except sqlite3.Error as exc:
                raise SchemaFileError(f"{self.path}: cannot open as a SQLite database ({exc})") from exc
            try:
                # registered modules (read before the authorizer; touches no user data): any
                # eponymous one outside ALLOWED_TABLE_FUNCTIONS is refused by name
                self._modules = {
                    str(r[0]).lower() for r in conn.execute("SELECT name FROM pragma_module_list")
                } - ALLOWED_TABLE_FUNCTIONS
            except sqlite3.Error:  # pragma: no cover - SQLite without the pragma
                self._modules = {"dbstat", "sqlite_stmt", "sqlite_dbpage"}
            cell = self.config.cell_limit
            conn.set_authorizer(self._authorize)
            conn.set_progress_handler(self._progress, self.config.progress_steps)
            if hasattr(conn, "setlimit"):  # Python >= 3.11
                conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # type: ignore[attr-defined]
                conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, cell)  # type: ignore[attr-defined]
                conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 1000)  # type: ignore[attr-defined]
            # printf()/format() return NULL (not an error) when their output is over the length
            # limit: the checked versions raise, so an over-long value is never a silent NULL
            self._fmt = sqlite3.connect(":memory:", check_same_thread=False)
            if hasattr(self._fmt, "setlimit"):
                self._fmt.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, cell)  # type: ignore[attr-defined]
            for name in ("printf", "format"):
                conn.create_function(name, -1, self._checked_printf(name), deterministic=True)
            self._conn = conn
        return self._conn

    def _checked_printf(self, name: str) -> Any:
        limit = self.config.cell_limit
        fmt_conn = self._fmt

        def call(*args: Any) -> Any:
            if not args or args[0] is None:
                return None
            fmt = args[0].decode("utf-8", "replace") if isinstance(args[0], bytes) else str(args[0])
            pos = 1
            for m in _PRINTF_SPEC.finditer(fmt):
                width, prec, conv = m.group(1), m.group(2), m.group(3)
                if conv == "%":
                    continue
                sizes = []
                for part in (width, prec):
                    if part == "*":
                        sizes.append(_as_int(args[pos] if pos < len(args) else 0))
                        pos += 1
                    elif part:
                        sizes.append(int(part))
                    else:
                        sizes.append(0)
                pos += 1
                w, p = sizes
                # a width, or a precision of a conversion that pads or repeats, over the limit
                # makes an over-long value: refuse at once (printf('%.*c', 1e9, 'x') would
                # otherwise spend seconds inside one opcode before SQLite gives up)
                if abs(w) > limit or (conv not in "sqQwz" and abs(p) > limit):
                    self._too_big = f"{name}() result longer than the {limit}-byte value limit"
                    raise ValueError(self._too_big)
            marks = ", ".join("?" * len(args))
            out = fmt_conn.execute(f"SELECT {name}({marks})", args).fetchone()[0]
            if out is None:  # the format was not NULL: SQLite gave up on the length
                self._too_big = f"{name}() result longer than the {limit}-byte value limit"
                raise ValueError(self._too_big)
            return out

        return call

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _trig: str | None
    ) -> int:
        if action == sqlite3.SQLITE_READ:
            if (arg1 or "").lower() in self._modules:
                self._denied = self._denied or f"table-valued function {arg1}()"
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in self.functions:
                return sqlite3.SQLITE_OK
            self._denied = self._denied or f"function {arg2}()"
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            if (arg1 or "").lower() in _READ_ONLY_PRAGMAS:
                return sqlite3.SQLITE_OK
            self._denied = self._denied or f"PRAGMA {arg1}"
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_UPDATE and (arg1 or "").lower() in _SCHEMA_TABLES and _trig is None:
            return sqlite3.SQLITE_OK  # asked while a table-valued function is declared
        name = AUTHORIZER_ACTIONS.get(action, f"action {action}")
        # SQLite stops at the first refusal (DROP TABLE is first asked as DELETE sqlite_master)
        self._denied = self._denied or f"{name} {arg1 or ''}".strip()
        return sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._fmt is not None:
            self._fmt.close()
            self._fmt = None

    def run(
        self, sql: str, cap: int, params: Sequence[Any] = (), timeout_s: float | None = None
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]], bool, int]:
        """Execute; returns ``(columns, rows, truncated, nbytes)`` or raises a sandbox error."""
        conn = self.connect()
        cfg = self.config
        limit = cfg.timeout_s if timeout_s is None else timeout_s
        self._denied = None
        self._too_big = None
        self._deadline = time.monotonic() + limit
        cur = conn.cursor()
        rows: list[tuple[Any, ...]] = []
        size = 0
        truncated = False
        try:
            cur.execute(sql, tuple(params))
            while not truncated:
                batch = cur.fetchmany(256)
                if not batch:
                    break
                for row in batch:
                    if len(rows) >= cap:
                        truncated = True
                        break
                    cost = row_bytes(row)
                    if size + cost > cfg.max_bytes:
                        if cfg.on_row_limit == "raise":
                            raise SandboxLimitError(f"result exceeds {cfg.max_bytes} bytes: {sql[:200]!r}")
                        truncated = True
                        break
                    size += cost
                    rows.append(tuple(row))
            columns = tuple(d[0] for d in (cur.description or ()))
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if self._too_big is not None:
                raise SandboxLimitError(f"{self._too_big}: {sql[:200]!r}") from exc
            if "one statement" in msg:
                raise SandboxPermissionError(f"only one statement may run at a time: {sql[:200]!r}") from exc
            if (
                self._denied is not None
                or "not authorized" in msg
                or "readonly" in msg
                or "may not be modified" in msg
                or "unsafe use of" in msg  # a function or virtual table in a view of the file
            ):
                what = self._denied or msg
                raise SandboxPermissionError(f"sandbox refused {what!r} in {sql[:200]!r}") from exc
            if "interrupted" in msg:
                raise SandboxLimitError(
                    f"statement stopped after the {limit:g}s time limit: {sql[:200]!r}"
                ) from exc
            if "too big" in msg:
                raise SandboxLimitError(
                    f"a value is longer than the {cfg.cell_limit}-byte limit ({msg}): {sql[:200]!r}"
                ) from exc
            if "out of memory" in msg:
                raise SandboxLimitError(f"statement exceeded a size limit ({msg}): {sql[:200]!r}") from exc
            raise SandboxError(f"SQLite error {msg!r} in {sql[:200]!r}") from exc
        except sqlite3.Warning as exc:  # "You can only execute one statement at a time." on some versions
            raise SandboxPermissionError(f"only one statement may run at a time: {sql[:200]!r}") from exc
        except sqlite3.ProgrammingError as exc:  # wrong number of bindings
            raise SandboxError(f"SQLite error {str(exc)!r} in {sql[:200]!r}") from exc
        except MemoryError as exc:
            raise SandboxLimitError(f"statement exceeded the memory limit: {sql[:200]!r}") from exc
        finally:
            cur.close()
        if truncated and cfg.on_row_limit == "raise":
            raise SandboxLimitError(f"result has more than {cap} rows: {sql[:200]!r}")
        return columns, rows, truncated, size


# --------------------------------------------------------------------------------------------
# process isolation
# --------------------------------------------------------------------------------------------
_ERRORS: dict[str, type[SandboxError]] = {
    "permission": SandboxPermissionError,
    "limit": SandboxLimitError,
    "file": SchemaFileError,  # type: ignore[dict-item]
    "error": SandboxError,
}


def _send(fd: int, obj: Any) -> None:
    data = marshal.dumps(obj)
    view = memoryview(struct.pack(">Q", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv(fd: int, deadline: float | None) -> Any:
    def read(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    (n,) = struct.unpack(">Q", read(8))
    return marshal.loads(read(n))


# The worker imports only the sandbox's own modules: the package is registered without running
# its ``__init__`` (which loads sqlglot, numpy and the rest), so a worker starts in ~0.15 s.
_WORKER_BOOT = (
    "import sys, types\n"
    "pkg = types.ModuleType('zjulab.hiesql')\n"
    "pkg.__path__ = [sys.argv[1]]\n"
    "sys.modules['zjulab.hiesql'] = pkg\n"
    "from zjulab.hiesql._sandbox_worker import main\n"
    "raise SystemExit(main())\n"
)


class _Worker:
    """A child Python process running :class:`_Engine` under rlimits (``python -m zjulab.hiesql._sandbox_worker``)."""

    def __init__(self, path: Path, config: SandboxConfig) -> None:
        self.path = path
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, str(Path(__file__).resolve().parent)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()}
            try:
                _send(proc.stdin.fileno(), (str(self.path), cfg))
                ready = _recv(proc.stdout.fileno(), time.monotonic() + 60.0)
            except (TimeoutError, EOFError, OSError) as exc:
                proc.kill()
                proc.wait()
                raise SandboxError(f"the sandbox worker process did not start ({exc!r})") from exc
            if ready[0] != "ready":
                proc.kill()
                proc.wait()
                raise _ERRORS.get(ready[1], SandboxError)(ready[2])
            self.proc = proc
        return self.proc

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self.proc = None

    def run(
        self, sql: str, cap: int, params: Sequence[Any] = (), timeout_s: float | None = None
    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]], bool, int]:
        proc = self.start()
        assert proc.stdin is not None and proc.stdout is not None
        limit = self.config.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit * 1.1 + 0.05  # the worker's own check fires first
        try:
            _send(proc.stdin.fileno(), (sql, cap, tuple(params), limit))
            reply = _recv(proc.stdout.fileno(), deadline)
        except TimeoutError:
            self.kill()
            raise SandboxLimitError(
                f"statement killed at the {limit:g}s time limit (worker process): {sql[:200]!r}"
            ) from None
        except (EOFError, OSError, ValueError):
            code = proc.poll()
            self.kill()
            raise SandboxLimitError(
                f"the worker process died (exit {code}) running {sql[:200]!r}: CPU or memory limit"
            ) from None
        if reply[0] == "ok":
            _, columns, rows, truncated, nbytes = reply
            return tuple(columns), [tuple(r) for r in rows], bool(truncated), int(nbytes)
        raise _ERRORS.get(reply[1], SandboxError)(reply[2])


class SQLiteSandbox:
    """Execute read-only SQL against a SQLite file with time, row and memory limits.

    Args:
        path: The SQLite database file (must exist; it is never modified).
        config: Limits; defaults to :class:`~zjulab.hiesql.config.SandboxConfig()`.

    Raises:
        SchemaFileError: When the path is not an existing file.

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
        self._backend: _Engine | _Worker = (
            _Worker(self.path, self.config)
            if self.config.isolation == "process"
            else _Engine(self.path, self.config)
        )

    def close(self) -> None:
        """Close the connection (and stop the worker process); the sandbox reconnects when used again."""
        if isinstance(self._backend, _Worker):
            self._backend.kill()
        else:
            self._backend.close()

    def __enter__(self) -> SQLiteSandbox:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:  # a worker process must not outlive its sandbox
        backend = getattr(self, "_backend", None)
        if isinstance(backend, _Worker):
            with contextlib.suppress(Exception):  # interpreter shutdown
                backend.kill()

    def execute(
        self,
        sql: str,
        max_rows: int | None = None,
        *,
        params: Sequence[Any] = (),
        timeout_s: float | None = None,
    ) -> ExecutionResult:
        """Run one read-only statement.

        Args:
            sql: The statement.
            max_rows: Override of the configured row cap.
            params: Values bound to the statement's ``?`` placeholders.
            timeout_s: Override of the configured time limit (e.g. what is left of a budget).

        Returns:
            The rows and column names.

        Raises:
            SandboxPermissionError: The statement tries to write, attach, change a PRAGMA, call a
                function outside :data:`ALLOWED_FUNCTIONS` or a table-valued function outside
                :data:`ALLOWED_TABLE_FUNCTIONS`, or holds more than one statement.
            SandboxLimitError: It ran past the time limit, a value was longer than
                ``max_cell_bytes``, or the result exceeded the memory cap or the row cap with
                ``on_row_limit="raise"`` (or the worker hit an rlimit).
            SandboxError: Any other SQLite error (syntax, unknown column...).
        """
        cap = self.config.max_rows if max_rows is None else max_rows
        if timeout_s is not None and timeout_s <= 0:
            raise SandboxLimitError(f"no time left to run {sql[:200]!r}")
        if isinstance(self._backend, _Worker):
            self._backend.start()  # start-up time does not count against the statement
        start = time.monotonic()
        columns, rows, truncated, nbytes = self._backend.run(sql, cap, params, timeout_s)
        return ExecutionResult(columns, rows, truncated, time.monotonic() - start, nbytes)
