"""Database schemas in the Spider ``tables.json`` form, loaded from JSON or read from SQLite."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zjulab.hiesql.errors import SchemaFileError, UnknownDatabaseError

logger = logging.getLogger(__name__)

__all__ = ["Schema", "SchemaSet", "load_tables", "natural_name", "schema_from_sqlite"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])")
_SEPARATORS = re.compile(r"[\s_\-.$#@/]+")


def natural_name(name: str) -> str:
    """The words of an identifier, lower-cased, whatever its naming style.

    ``order_id``, ``OrderID``, ``orderId``, ``Order ID``, ``order-id`` and ``ORDER_ID`` all give
    ``"order id"``; ``HTTPStatus2xx`` gives ``"http status 2xx"``.
    """
    return " ".join(w for w in _SEPARATORS.split(_CAMEL.sub(" ", name)) if w).lower()


@dataclass(frozen=True)
class Schema:
    """One database schema (the Spider ``tables.json`` entry).

    Column 0 is the special ``*`` column with table index -1, as in Spider.

    Args:
        db_id: Database identifier.
        table_names_original: Table names as written in the database.
        column_names_original: ``(table_index, column_name)`` pairs as written in the database.
        table_names: Natural-language table names (defaults to the original names).
        column_names: Natural-language ``(table_index, name)`` pairs (defaults to the originals).
        column_types: One type string per column (``"text"``, ``"number"``...).
        primary_keys: Column indices that are primary keys.
        foreign_keys: ``(column_index, referenced_column_index)`` pairs.
    """

    db_id: str
    table_names_original: tuple[str, ...]
    column_names_original: tuple[tuple[int, str], ...]
    table_names: tuple[str, ...] = ()
    column_names: tuple[tuple[int, str], ...] = ()
    column_types: tuple[str, ...] = ()
    primary_keys: tuple[int, ...] = ()
    foreign_keys: tuple[tuple[int, int], ...] = ()
    _lower_tables: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.table_names:
            object.__setattr__(self, "table_names", tuple(natural_name(t) for t in self.table_names_original))
        if not self.column_names:
            object.__setattr__(
                self,
                "column_names",
                tuple((t, natural_name(c)) for t, c in self.column_names_original),
            )
        if not self.column_types:
            object.__setattr__(self, "column_types", tuple("text" for _ in self.column_names_original))
        for t_idx, name in self.column_names_original:
            if t_idx >= len(self.table_names_original) or (t_idx < 0 and name != "*"):
                raise SchemaFileError(f"schema {self.db_id!r}: column {name!r} has bad table index {t_idx}")
        n_cols = len(self.column_names_original)
        for what, got, want in (
            ("table_names", len(self.table_names), len(self.table_names_original)),
            ("column_names", len(self.column_names), n_cols),
            ("column_types", len(self.column_types), n_cols),
        ):
            if got != want:
                raise SchemaFileError(f"schema {self.db_id!r}: {what} has {got} entries, expected {want}")
        for pk in self.primary_keys:
            if not 0 <= pk < n_cols:
                raise SchemaFileError(f"schema {self.db_id!r}: primary key {pk} out of range")
        for a, b in self.foreign_keys:
            if not (0 <= a < n_cols and 0 <= b < n_cols):
                raise SchemaFileError(f"schema {self.db_id!r}: foreign key ({a}, {b}) out of range")
        lower: dict[str, list[str]] = {t.lower(): [] for t in self.table_names_original}
        for t_idx, name in self.column_names_original:
            if t_idx >= 0:
                lower[self.table_names_original[t_idx].lower()].append(name.lower())
        object.__setattr__(self, "_lower_tables", lower)

    @property
    def tables(self) -> dict[str, list[str]]:
        """Lower-cased table name -> lower-cased column names (the evaluator's view)."""
        return self._lower_tables

    def columns_of(self, table_index: int) -> list[int]:
        """Column indices that belong to ``table_index``."""
        return [i for i, (t, _) in enumerate(self.column_names_original) if t == table_index]

    def qualified_column(self, column_index: int) -> str:
        """``table.column`` (original spelling) for a column index; ``*`` for column 0."""
        t_idx, name = self.column_names_original[column_index]
        return name if t_idx < 0 else f"{self.table_names_original[t_idx]}.{name}"

    def foreign_key_map(self) -> dict[str, str]:
        """Map each foreign-key-linked column id to the smallest column id of its linked group.

        Column ids use the evaluator's ``__table.column__`` spelling. Groups are formed the way
        the official evaluator forms them: each key pair joins the first group that already holds
        either of its two columns, otherwise it starts a new group.
        """
        ids = [
            "__all__" if t < 0 else f"__{self.table_names_original[t].lower()}.{c.lower()}__"
            for t, c in self.column_names_original
        ]
        groups: list[set[int]] = []
        for a, b in self.foreign_keys:
            target = next((g for g in groups if a in g or b in g), None)
            if target is None:
                target = set()
                groups.append(target)
            target.update((a, b))
        mapping: dict[str, str] = {}
        for g in groups:
            head = ids[min(g)]
            for i in g:
                mapping[ids[i]] = head
        return mapping

    def to_json(self) -> dict[str, Any]:
        """The ``tables.json`` entry for this schema."""
        return {
            "db_id": self.db_id,
            "table_names_original": list(self.table_names_original),
            "table_names": list(self.table_names),
            "column_names_original": [list(c) for c in self.column_names_original],
            "column_names": [list(c) for c in self.column_names],
            "column_types": list(self.column_types),
            "primary_keys": list(self.primary_keys),
            "foreign_keys": [list(fk) for fk in self.foreign_keys],
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Schema:
        """Build a schema from one ``tables.json`` entry.

        Raises:
            SchemaFileError: When a required key is missing or malformed.
        """
        try:
            pks = [p for p in entry.get("primary_keys", []) for p in (p if isinstance(p, list) else [p])]
            fks: list[tuple[int, int]] = []
            for fk in entry.get("foreign_keys", []):
                fks.append((int(fk[0]), int(fk[1])))
            return cls(
                db_id=str(entry["db_id"]),
                table_names_original=tuple(entry["table_names_original"]),
                column_names_original=tuple((int(t), str(c)) for t, c in entry["column_names_original"]),
                table_names=tuple(entry.get("table_names", ())),
                column_names=tuple((int(t), str(c)) for t, c in entry.get("column_names", ())),
                column_types=tuple(entry.get("column_types", ())),
                primary_keys=tuple(int(p) for p in pks),
                foreign_keys=tuple(fks),
            )
        except SchemaFileError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SchemaFileError(f"bad tables.json entry {entry.get('db_id', '?')!r}: {exc!r}") from exc


class SchemaSet(dict[str, Schema]):
    """``db_id`` -> :class:`Schema`, raising :class:`UnknownDatabaseError` for unknown ids."""

    def __missing__(self, key: str) -> Schema:
        known = ", ".join(sorted(self)[:5])
        raise UnknownDatabaseError(f"unknown db_id {key!r} ({len(self)} schemas loaded, e.g. {known})")


def read_text_file(path: Path, what: str) -> str:
    """Read a UTF-8 text file, raising :class:`SchemaFileError` naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SchemaFileError(f"{what} not found: {path}") from exc
    except IsADirectoryError as exc:
        raise SchemaFileError(f"{what} {path} is a directory, not a file") from exc
    except PermissionError as exc:
        raise SchemaFileError(f"{what} {path} cannot be read (permission denied)") from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SchemaFileError(f"{path}:{line}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise SchemaFileError(f"{what} {path} cannot be read ({exc})") from exc


def read_json_file(path: Path, what: str) -> Any:
    """Read JSON, raising :class:`SchemaFileError` naming the file (and line) when it fails."""
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc


def load_tables(path: str | Path) -> SchemaSet:
    """Load a Spider-style ``tables.json`` into a :class:`SchemaSet`.

    Args:
        path: The JSON file (a list of schema entries).

    Returns:
        The schemas keyed by ``db_id``.

    Raises:
        SchemaFileError: When the file is missing, not JSON, or an entry is malformed.
    """
    p = Path(path)
    data = read_json_file(p, "tables file")
    if not isinstance(data, list):
        raise SchemaFileError(f"{p}: expected a JSON list of schemas, got {type(data).__name__}")
    out = SchemaSet()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise SchemaFileError(f"{p}: entry {i} is a {type(entry).__name__}, not a schema object")
        try:
            schema = Schema.from_json(entry)
        except SchemaFileError as exc:
            raise SchemaFileError(f"{p}: entry {i}: {exc}") from exc
        if schema.db_id in out:
            raise SchemaFileError(f"{p}: entry {i}: db_id {schema.db_id!r} appears twice")
        out[schema.db_id] = schema
    return out


def schema_from_sqlite(
    path: str | Path,
    db_id: str | None = None,
    *,
    sandbox: Any = None,
    timeout_s: float = 10.0,
) -> Schema:
    """Read a schema (tables, views, columns, types, primary and foreign keys) from a SQLite file.

    A user's database is untrusted input: every read goes through the sandbox (read-only
    encoded URI, authorizer, value and row caps; by default
    :data:`~zjulab.hiesql.sandbox.READ_SANDBOX`, a worker process killed at the deadline), and
    the whole read has a time budget, so a file built to be slow (views nested into millions
    of references, huge schemas) raises instead of stalling. Views are listed after the
    tables, as tables without keys; a view that cannot be prepared (an unknown or refused
    function, too slow to prepare) is left out with a warning. A foreign key written
    ``REFERENCES author`` (no column) points at the primary key of ``author``, as SQLite reads
    it.

    Args:
        path: The SQLite database file.
        db_id: Identifier to give the schema; defaults to the file stem.
        sandbox: A :class:`~zjulab.hiesql.sandbox.SQLiteSandbox` over ``path`` to read with
            (e.g. a session's); a ``READ_SANDBOX`` one is opened and closed when omitted.
        timeout_s: Time the whole read may take.

    Returns:
        The schema.

    Raises:
        SchemaFileError: When the path is not an existing file, not a SQLite database, or its
            schema cannot be read within the limits.
    """
    from zjulab.hiesql.errors import SandboxError, SandboxLimitError, SandboxPermissionError
    from zjulab.hiesql.sandbox import READ_SANDBOX, SQLiteSandbox

    p = Path(path)
    if not p.is_file():
        raise SchemaFileError(f"database file not found: {p}" + (" (a directory)" if p.is_dir() else ""))
    own = sandbox is None
    box = SQLiteSandbox(p, READ_SANDBOX) if own else sandbox
    deadline = time.monotonic() + timeout_s
    rows_cap = READ_SANDBOX.max_rows

    def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SchemaFileError(f"{p}: reading the schema took longer than {timeout_s:g}s")
        res = box.execute(sql, max_rows=rows_cap, params=params, timeout_s=min(left, READ_SANDBOX.timeout_s))
        if res.truncated:
            raise SchemaFileError(f"{p}: the schema is larger than the sandbox's limits ({sql[:60]!r})")
        return res.rows

    try:
        listed = query(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'view', rowid"
        )
        rows = []
        infos: dict[str, list[tuple[Any, ...]]] = {}
        for name, kind in listed:
            # columns of each table and view, read once; a view that cannot be prepared within
            # one statement's limit (unknown or refused function, too slow) is left out
            try:
                infos[name] = query("SELECT name, type, pk FROM pragma_table_info(?)", (name,))
            except SandboxError as exc:
                if kind != "view" or time.monotonic() >= deadline:
                    raise
                logger.warning("%s: view %r left out of the schema: %s", p, name, exc)
                continue
            rows.append((name, kind))
        tables = [r[0] for r in rows]
        cols: list[tuple[int, str]] = [(-1, "*")]
        types: list[str] = ["text"]
        pks: list[int] = []
        table_pks: dict[str, list[int]] = {}
        index: dict[tuple[str, str], int] = {}
        for t_idx, table in enumerate(tables):
            info = infos[table]
            keyed = sorted((pk, len(cols) + k) for k, (_n, _t, pk) in enumerate(info) if pk)
            table_pks[table.lower()] = [c for _pk, c in keyed]
            for name, ctype, pk in info:
                index[(table.lower(), name.lower())] = len(cols)
                if pk:
                    pks.append(len(cols))
                cols.append((t_idx, name))
                low = (ctype or "").lower()
                types.append(
                    "number"
                    if any(k in low for k in ("int", "real", "num", "float", "double", "dec"))
                    else "text"
                )
        fks: list[tuple[int, int]] = []
        for table, kind in rows:
            if kind != "table":
                continue
            for _id, seq, ref_table, src, dst, *_rest in query(
                "SELECT * FROM pragma_foreign_key_list(?)", (table,)
            ):
                a = index.get((table.lower(), str(src).lower()))
                if dst is None:  # REFERENCES t: the seq-th primary-key column of t
                    ref_pks = table_pks.get(str(ref_table).lower(), [])
                    b = ref_pks[seq] if seq < len(ref_pks) else None
                else:
                    b = index.get((str(ref_table).lower(), str(dst).lower()))
                if a is not None and b is not None:
                    fks.append((a, b))
                else:
                    logger.warning(
                        "%s: foreign key %s.%s -> %s(%s) names no known column",
                        p,
                        table,
                        src,
                        ref_table,
                        dst,
                    )
    except SandboxPermissionError as exc:
        raise SchemaFileError(f"{p}: the schema cannot be read inside the sandbox ({exc})") from exc
    except SandboxLimitError as exc:
        if time.monotonic() >= deadline:
            raise SchemaFileError(f"{p}: reading the schema took longer than {timeout_s:g}s ({exc})") from exc
        raise SchemaFileError(f"{p}: reading the schema exceeded the sandbox's limits ({exc})") from exc
    except SandboxError as exc:
        raise SchemaFileError(f"{p}: not a readable SQLite database ({exc})") from exc
    finally:
        if own:
            box.close()
    return Schema(
        db_id=db_id or p.stem,
        table_names_original=tuple(tables),
        column_names_original=tuple(cols),
        column_types=tuple(types),
        primary_keys=tuple(pks),
        foreign_keys=tuple(fks),
    )
