"""The storage engine of a :class:`~zjulab.fluxmem.memory.FluxMemory`: SQLite in WAL mode.

One database file, ``STORE_DIR/fluxmem.sqlite3``, holds everything:

* ``nodes`` (one row per memory unit, with its float32 embedding as a blob),
  ``edges``, ``history``, ``trajectories``, ``tails`` (the last message of each conversation
  thread) and ``meta`` (format version, encoder name and dimension, configuration);
* ``fts``, an FTS5 table over node contents (rowid = ``nodes.rid``) whose built-in ``bm25()``
  ranks the lexical side of search and is updated with every insert and delete;
* ``vec_log``, an append-only log of vector inserts and deletes. Each process keeps a faiss
  index of the vectors in memory and replays the log entries it has not seen before every read
  and inside every write transaction, so it always agrees with the database, including the
  writes of other processes. The index is rebuilt from ``nodes.vec`` whenever in doubt (open,
  rollback), so it is never a second source of truth.

Every public change is one ``BEGIN IMMEDIATE`` transaction: SQLite's own writer lock serialises
writers across processes and threads, a kill at any moment leaves the last committed state (the
WAL is rolled back or forward on the next open), and nothing is ever rewritten whole. Deleted
content is overwritten on disk (``PRAGMA secure_delete``, an FTS ``optimize`` after erasures and
a WAL checkpoint), so erased text does not linger in free pages.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.fluxmem.errors import FluxStoreError, FluxStoreVersionError, MemoryNotFoundError
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode
from zjulab.fluxmem.validation import check_text

__all__ = ["DB_NAME", "FORMAT", "FORMAT_VERSION", "SQLGraph", "SQLiteStore", "VectorCache", "fts_query"]

logger = logging.getLogger(__name__)

FORMAT = "zjulab-fluxmem-sqlite"
FORMAT_VERSION = 2
DB_NAME = "fluxmem.sqlite3"
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # what FTS5's unicode61 tokenizer calls a token
BM25_K1 = 1.2  # FTS5's bm25() defaults
BM25_B = 0.75


def tokens(text: str) -> list[str]:
    """The FTS5 (unicode61, case-folded) tokens of ``text``."""
    return _TOKEN.findall(text.lower())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    user_id TEXT, agent_id TEXT, run_id TEXT,
    speaker TEXT, timestamp TEXT,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    vec BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_user ON nodes(user_id);
CREATE INDEX IF NOT EXISTS nodes_agent ON nodes(agent_id);
CREATE INDEX IF NOT EXISTS nodes_run ON nodes(run_id);
CREATE TABLE IF NOT EXISTS edges (
    source TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    weight REAL NOT NULL, stage TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (source, target, kind)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_target ON edges(target);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL, memory_id TEXT NOT NULL, event TEXT NOT NULL, stage TEXT NOT NULL,
    old_memory TEXT, new_memory TEXT, detail TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id);
CREATE TABLE IF NOT EXISTS trajectories (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, user_id TEXT, agent_id TEXT, run_id TEXT,
    query TEXT NOT NULL, evidence TEXT NOT NULL, retrieved TEXT NOT NULL, text TEXT NOT NULL,
    success INTEGER NOT NULL, consolidated INTEGER NOT NULL DEFAULT 0, skill_id TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tails (key TEXT PRIMARY KEY, node_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vec_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, rid INTEGER NOT NULL, op TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(content, tokenize="unicode61 remove_diacritics 0");
CREATE TABLE IF NOT EXISTS fts_terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fts_stats (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""

_NODE_COLS = (
    "rid, id, kind, content, user_id, agent_id, run_id, speaker, timestamp, metadata, created_at, updated_at"
)
SCOPE_FIELDS = ("user_id", "agent_id", "run_id")


def fts_query(text: str | Sequence[str]) -> str | None:
    """An FTS5 ``MATCH`` expression: every word of ``text`` quoted, joined by ``OR``."""
    toks = list(dict.fromkeys(tokens(text) if isinstance(text, str) else text))
    if not toks:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in toks)


def _node(row: Sequence[Any]) -> MemoryNode:
    node = MemoryNode(
        id=row[1],
        kind=row[2],
        content=row[3],
        user_id=row[4],
        agent_id=row[5],
        run_id=row[6],
        speaker=row[7],
        timestamp=row[8],
        metadata=json.loads(row[9]) if row[9] != "{}" else {},
        created_at=row[10],
        updated_at=row[11],
    )
    return node


def _edge(row: Sequence[Any]) -> MemoryEdge:
    return MemoryEdge(
        source=row[0], target=row[1], kind=row[2], weight=float(row[3]), stage=row[4], created_at=row[5]
    )


def where_scope(filters: Mapping[str, str | None], alias: str = "") -> tuple[str, list[Any]]:
    """``(sql, params)`` of the combined scope filter: every given id must match."""
    prefix = f"{alias}." if alias else ""
    parts, params = [], []
    for name in SCOPE_FIELDS:
        value = filters.get(name)
        if value is not None:
            parts.append(f"{prefix}{name} = ?")
            params.append(value)
    return (" AND ".join(parts) or "1"), params


class VectorCache:
    """This process's faiss view of ``nodes.vec``, kept in step through ``vec_log``.

    faiss ids are the nodes' integer ``rid``. :meth:`sync` applies the log entries past the last
    one seen; :meth:`invalidate` forces a rebuild from the table on the next sync.
    """

    def __init__(self, dim: int, ivf_min: int | None = None, nprobe: int = 64) -> None:
        import faiss

        self._faiss = faiss
        self.dim = dim
        self.ivf_min = ivf_min
        self.nprobe = nprobe
        self.approximate = False
        self._index: Any = None
        self.rid_to_id: dict[int, str] = {}
        self.id_to_rid: dict[str, int] = {}
        self.seq = -1
        self.rid_scope: dict[int, tuple[str | None, str | None, str | None]] = {}
        # scope filter -> (committed rids array, rids added since); kept up to date on put
        self._filters: dict[tuple[Any, ...], tuple[np.ndarray, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.rid_to_id)

    def invalidate(self) -> None:
        """Drop the cache (rebuilt from the database on the next :meth:`sync`)."""
        self._index = None
        self.rid_to_id.clear()
        self.id_to_rid.clear()
        self.rid_scope.clear()
        self.seq = -1
        self._filters.clear()

    def _rebuild(self, conn: sqlite3.Connection) -> None:
        faiss = self._faiss
        n = int(conn.execute("SELECT count(*) FROM nodes").fetchone()[0])
        self.approximate = self.ivf_min is not None and n >= self.ivf_min
        if self.approximate:
            # an inverted-file index for large stores: trained once on a sample of the stored
            # vectors (faiss's k-means has a fixed seed), searched over `nprobe` of its lists
            nlist = max(16, int(4 * math.sqrt(n)))
            sample = np.frombuffer(
                b"".join(
                    b
                    for (b,) in conn.execute(
                        "SELECT vec FROM nodes ORDER BY rid LIMIT ?", (max(40 * nlist, 10000),)
                    )
                ),
                dtype=np.float32,
            ).reshape(-1, self.dim)
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(np.ascontiguousarray(sample))
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            ivf.nprobe = self.nprobe
            self._quantizer = quantizer  # keep it alive as long as the index
            self._index = ivf
        else:
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.rid_to_id.clear()
        self.id_to_rid.clear()
        self.rid_scope.clear()
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM vec_log").fetchone()
        self.seq = int(row[0])
        batch_r: list[int] = []
        batch_v: list[bytes] = []
        for rid, nid, blob, u, a, r in conn.execute(
            "SELECT rid, id, vec, user_id, agent_id, run_id FROM nodes ORDER BY rid"
        ):
            self.rid_to_id[rid] = nid
            self.id_to_rid[nid] = rid
            self.rid_scope[rid] = (u, a, r)
            batch_r.append(rid)
            batch_v.append(blob)
            if len(batch_r) >= 8192:
                self._add_raw(batch_r, batch_v)
                batch_r, batch_v = [], []
        if batch_r:
            self._add_raw(batch_r, batch_v)
        self._filters.clear()

    def _add_raw(self, rids: list[int], blobs: list[bytes]) -> None:
        vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rids), self.dim)
        self._index.add_with_ids(np.ascontiguousarray(vecs), np.asarray(rids, dtype=np.int64))

    def sync(self, conn: sqlite3.Connection) -> None:
        """Apply every committed (or own, in a transaction) change not yet seen."""
        if self._index is None:
            self._rebuild(conn)
            return
        rows = conn.execute(
            "SELECT seq, rid, op FROM vec_log WHERE seq > ? ORDER BY seq", (self.seq,)
        ).fetchall()
        if not rows:
            return
        adds: list[int] = []
        for seq, rid, op in rows:
            self.seq = seq
            if op == "add":
                if rid not in self.rid_to_id:
                    adds.append(rid)
            else:
                if rid in adds:
                    adds.remove(rid)
                self.drop([rid])
        if adds:
            got = {}
            for i in range(0, len(adds), 900):
                chunk = adds[i : i + 900]
                q = ",".join("?" * len(chunk))
                for rid, nid, blob, u, a, r in conn.execute(
                    f"SELECT rid, id, vec, user_id, agent_id, run_id FROM nodes WHERE rid IN ({q})", chunk
                ):
                    got[rid] = (nid, blob, (u, a, r))
            present = [r for r in adds if r in got]
            for r in present:
                self.rid_to_id[r] = got[r][0]
                self.id_to_rid[got[r][0]] = r
                self.rid_scope[r] = got[r][2]
                self._note(r)
            if present:
                self._add_raw(present, [got[r][1] for r in present])

    def _note(self, rid: int) -> None:
        scope = self.rid_scope[rid]
        for key, (_, pending) in self._filters.items():
            if all(want is None or want == have for want, have in zip(key, scope)):
                pending.append(rid)

    def put(
        self, rid: int, node_id: str, vec: np.ndarray, scope: tuple[str | None, str | None, str | None]
    ) -> None:
        """Index one vector now (inside the transaction that wrote it)."""
        if rid in self.rid_to_id:
            self.drop([rid])
        self.rid_to_id[rid] = node_id
        self.id_to_rid[node_id] = rid
        self.rid_scope[rid] = scope
        self._index.add_with_ids(
            np.ascontiguousarray(vec, dtype=np.float32).reshape(1, self.dim),
            np.asarray([rid], dtype=np.int64),
        )
        self._note(rid)

    def drop(self, rids: Iterable[int]) -> None:
        """Remove vectors by rid (unknown rids are ignored)."""
        gone = [r for r in rids if r in self.rid_to_id]
        for r in gone:
            del self.id_to_rid[self.rid_to_id.pop(r)]
            self.rid_scope.pop(r, None)
        if gone:
            self._index.remove_ids(np.asarray(gone, dtype=np.int64))
            self._filters.clear()

    def vectors(self, node_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``node_ids``, ``[len, dim]``."""
        if not node_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = np.asarray([self.id_to_rid[n] for n in node_ids], dtype=np.int64)
        return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32).reshape(len(keys), self.dim)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(node id, cosine)`` per query row, among ``allowed`` rids (None = all)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n = len(self.rid_to_id) if allowed is None else len(allowed)
        if not n or k <= 0 or not len(q):
            return [[] for _ in range(len(q))]
        k = min(k, n)
        if allowed is None or len(allowed) == len(self.rid_to_id):
            scores, ids = self._index.search(q, k)
        else:
            sel = self._faiss.IDSelectorBatch(allowed)
            if self.approximate:
                params = self._faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
            else:
                params = self._faiss.SearchParameters(sel=sel)
            scores, ids = self._index.search(q, k, params=params)
        return [
            [(self.rid_to_id[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
            for srow, irow in zip(scores, ids)
        ]

    def search_scope(
        self, conn: sqlite3.Connection, queries: np.ndarray, k: int, filters: Mapping[str, str | None]
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(node id, cosine)`` per query row among the rows a scope filter admits."""
        return self.search(queries, k, self.allowed(conn, filters))

    def close(self) -> None:
        """Nothing to release (the index lives in this process)."""

    def committed(self, conn: sqlite3.Connection) -> None:
        """Called after a write commits (faiss already holds the transaction's vectors)."""

    def discard(self) -> None:
        """Called after a write rolls back: rebuild from the database on the next sync."""
        self.invalidate()

    def allowed(self, conn: sqlite3.Connection, filters: Mapping[str, str | None]) -> np.ndarray | None:
        """The rids a scope filter admits, None when it admits every indexed vector.

        Read from the database once per filter, then kept up to date by :meth:`put` and
        :meth:`sync` (a delete drops the cached arrays).
        """
        key = tuple(filters.get(f) for f in SCOPE_FIELDS)
        entry = self._filters.get(key)
        if entry is None:
            sql, params = where_scope(filters)
            arr = np.fromiter(
                (r for (r,) in conn.execute(f"SELECT rid FROM nodes WHERE {sql}", params)), dtype=np.int64
            )
            if len(self._filters) > 256:
                self._filters.clear()
            entry = (arr, [])
            self._filters[key] = entry
        arr, pending = entry
        if pending:
            arr = np.concatenate([arr, np.asarray(pending, dtype=np.int64)])
            self._filters[key] = (arr, [])
        return None if len(arr) == len(self.rid_to_id) else arr


class SQLGraph:
    """The memory graph, read from and written to the ``nodes`` and ``edges`` tables."""

    def __init__(self, store: SQLiteStore) -> None:
        self._s = store

    @property
    def _c(self) -> sqlite3.Connection:
        return self._s.conn

    def __len__(self) -> int:
        return int(self._c.execute("SELECT count(*) FROM nodes").fetchone()[0])

    def __contains__(self, node_id: object) -> bool:
        if not isinstance(node_id, str):
            return False
        return self._c.execute("SELECT 1 FROM nodes WHERE id = ?", (node_id,)).fetchone() is not None

    @property
    def num_edges(self) -> int:
        """Number of edges."""
        return int(self._c.execute("SELECT count(*) FROM edges").fetchone()[0])

    def node(self, node_id: str) -> MemoryNode:
        """The node with id ``node_id``.

        Raises:
            MemoryNotFoundError: No such node.
        """
        if not isinstance(node_id, str):
            raise MemoryNotFoundError(f"memory ids are strings, got {node_id!r}")
        row = self._c.execute(f"SELECT {_NODE_COLS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"no memory with id {node_id!r}")
        return _node(row)

    def nodes_by_id(self, node_ids: Sequence[str], *, light: bool = False) -> dict[str, MemoryNode]:
        """The nodes among ``node_ids`` that exist, by id (``light``: without their metadata)."""
        out: dict[str, MemoryNode] = {}
        ids = list(dict.fromkeys(node_ids))
        cols = _NODE_COLS.replace("metadata", "'{}'") if light else _NODE_COLS
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            q = ",".join("?" * len(chunk))
            for row in self._c.execute(f"SELECT {cols} FROM nodes WHERE id IN ({q})", chunk):
                out[row[1]] = _node(row)
        return out

    def nodes(
        self, filters: Mapping[str, str | None] | None = None, limit: int | None = None
    ) -> Iterator[MemoryNode]:
        """Nodes in insertion order, optionally those matching a scope filter."""
        sql, params = where_scope(filters or {})
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        for row in self._c.execute(
            f"SELECT {_NODE_COLS} FROM nodes WHERE {sql} ORDER BY rid{lim}", params
        ).fetchall():
            yield _node(row)

    def edges(self) -> Iterator[MemoryEdge]:
        """All edges."""
        for row in self._c.execute(
            "SELECT source, target, kind, weight, stage, created_at FROM edges"
        ).fetchall():
            yield _edge(row)

    def find_edge(self, source: str, target: str, kind: str) -> MemoryEdge | None:
        """The edge ``source -> target`` of ``kind``, or None."""
        row = self._c.execute(
            "SELECT source, target, kind, weight, stage, created_at FROM edges WHERE source=? AND target=? AND kind=?",
            (source, target, kind),
        ).fetchone()
        return None if row is None else _edge(row)

    def has_link(self, a: str, b: str) -> bool:
        """Whether any edge joins ``a`` and ``b`` in either direction."""
        return (
            self._c.execute(
                "SELECT 1 FROM edges WHERE (source=? AND target=?) OR (source=? AND target=?) LIMIT 1",
                (a, b, b, a),
            ).fetchone()
            is not None
        )

    def add_edge(self, edge: MemoryEdge) -> bool:
        """Insert ``edge``; False (nothing changed) if an equal-kind edge exists.

        Raises:
            MemoryNotFoundError: An endpoint is missing.
            ValueError: A self-loop.
        """
        if edge.source == edge.target:
            raise ValueError(f"self-loop on {edge.source!r}")
        for end in (edge.source, edge.target):
            if end not in self:
                raise MemoryNotFoundError(f"no memory with id {end!r}")
        cur = self._c.execute(
            "INSERT OR IGNORE INTO edges VALUES (?, ?, ?, ?, ?, ?)",
            (edge.source, edge.target, edge.kind, float(edge.weight), edge.stage, edge.created_at),
        )
        return cur.rowcount > 0

    def remove_edge(self, source: str, target: str, kind: str) -> MemoryEdge | None:
        """Remove the edge ``source -> target`` of ``kind``; returns it, or None."""
        edge = self.find_edge(source, target, kind)
        if edge is not None:
            self._c.execute(
                "DELETE FROM edges WHERE source=? AND target=? AND kind=?", (source, target, kind)
            )
        return edge

    def out_edges(self, node_id: str) -> list[MemoryEdge]:
        """Edges leaving ``node_id``."""
        return [
            _edge(r)
            for r in self._c.execute(
                "SELECT source, target, kind, weight, stage, created_at FROM edges WHERE source=?", (node_id,)
            )
        ]

    def in_edges(self, node_id: str) -> list[MemoryEdge]:
        """Edges entering ``node_id``."""
        return [
            _edge(r)
            for r in self._c.execute(
                "SELECT source, target, kind, weight, stage, created_at FROM edges WHERE target=?", (node_id,)
            )
        ]

    def incident_edges(self, node_id: str) -> list[MemoryEdge]:
        """Edges touching ``node_id`` in either direction."""
        return self.out_edges(node_id) + self.in_edges(node_id)

    def neighbors(self, node_id: str, kinds: Iterable[str] | None = None) -> list[tuple[str, MemoryEdge]]:
        """``(other id, edge)`` for every edge touching ``node_id``, optionally by kind."""
        wanted = set(kinds) if kinds is not None else None
        out = []
        for e in self.incident_edges(node_id):
            if wanted is None or e.kind in wanted:
                out.append((e.target if e.source == node_id else e.source, e))
        return out

    def edges_among(self, node_ids: Sequence[str]) -> list[MemoryEdge]:
        """Every edge whose two endpoints are both in ``node_ids``."""
        ids = list(dict.fromkeys(node_ids))
        keep = set(ids)
        out = []
        for i in range(0, len(ids), 900):
            chunk = ids[i : i + 900]
            q = ",".join("?" * len(chunk))
            # one index seek per source; a second IN on target would make SQLite seek every pair
            for r in self._c.execute(
                f"SELECT source, target, kind, weight, stage, created_at FROM edges WHERE source IN ({q})",
                chunk,
            ):
                if r[1] in keep:
                    out.append(_edge(r))
        return out

    def edges_touching(self, node_ids: Sequence[str]) -> list[MemoryEdge]:
        """Every edge with an endpoint in ``node_ids`` (each once)."""
        ids = list(dict.fromkeys(node_ids))
        seen: dict[tuple[str, str, str], MemoryEdge] = {}
        for i in range(0, len(ids), 400):
            chunk = ids[i : i + 400]
            q = ",".join("?" * len(chunk))
            for r in self._c.execute(
                f"SELECT source, target, kind, weight, stage, created_at FROM edges "
                f"WHERE source IN ({q}) UNION SELECT source, target, kind, weight, stage, created_at "
                f"FROM edges WHERE target IN ({q})",
                chunk + chunk,
            ):
                seen[(r[0], r[1], r[2])] = _edge(r)
        return list(seen.values())


class SQLiteStore:
    """An open SQLite store (a file under a directory, or ``:memory:`` when ``path`` is None).

    Args:
        path: Store directory (created if absent), or None for a private in-memory database.
        dim: Embedding dimension (checked against a stored one by the caller).

    Raises:
        FluxStoreVersionError: ``path`` holds a format-1 (JSONL) store or another version.
        FluxStoreError: The database cannot be opened.
    """

    def __init__(self, path: Path | None, dim: int) -> None:
        self.path = path
        self.dim = dim
        self._lock = threading.RLock()
        self._depth = 0
        if path is not None:
            # SQLite takes UTF-8 file names: a name decoded with surrogateescape cannot be opened
            check_text(str(path), "store path")
            if (path / "manifest.json").exists() and not (path / DB_NAME).exists():
                raise FluxStoreVersionError(
                    f"{path} is a format-1 (JSONL) FluxMem store; convert it once with "
                    f"`zjulab-fluxmem migrate {path} NEW_DIR` (or zjulab.fluxmem.migrate_jsonl_store)"
                )
            if path.exists() and not path.is_dir():
                raise FluxStoreError(f"{path} is not a directory")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FluxStoreError(f"cannot create store directory {path}: {exc}") from exc
            target = str(path / DB_NAME)
        else:
            target = ":memory:"
        try:
            self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=60.0)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                self.conn.close()
                raise FluxStoreError(
                    f"{target} is an SQLite database that FluxMem did not create (tables: {sorted(tables)[:5]}); "
                    "it is left untouched"
                )
            if path is not None:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA secure_delete = ON")
            with self.write():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)  # idempotent (IF NOT EXISTS)
                # the row counter of stores written before it was kept: counted once
                if self.conn.execute("SELECT 1 FROM fts_stats WHERE k = 'docs'").fetchone() is None:
                    self.conn.execute("INSERT INTO fts_stats (k, v) SELECT 'docs', count(*) FROM fts")
        except sqlite3.DatabaseError as exc:
            raise FluxStoreError(f"{target}: not a FluxMem SQLite store ({exc})") from exc
        fmt = self.get_meta("format")
        if fmt is None:
            with self.write():
                self.set_meta("format", FORMAT)
                self.set_meta("version", FORMAT_VERSION)
        elif fmt != FORMAT or self.get_meta("version") != FORMAT_VERSION:
            raise FluxStoreVersionError(
                f"{target}: store format {fmt!r} version {self.get_meta('version')!r}, "
                f"this library reads {FORMAT} version {FORMAT_VERSION}"
            )
        self.vectors = VectorCache(dim)
        self.graph = SQLGraph(self)

    # ---------------------------------------------------------------- transactions

    @contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction (re-entrant): SQLite's writer lock is held until it ends."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                if getattr(self, "vectors", None) is not None:
                    self.vectors.sync(self.conn)
                yield
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                if getattr(self, "vectors", None) is not None:
                    self.vectors.discard()
                raise
            self._depth = 0
            self.conn.execute("COMMIT")
            if getattr(self, "vectors", None) is not None:
                self.vectors.committed(self.conn)

    @contextmanager
    def read(self) -> Iterator[None]:
        """Bring the vector cache up to date, then read under the lock."""
        with self._lock:
            if not self._depth:
                self.vectors.sync(self.conn)
            yield

    @property
    def in_write(self) -> bool:
        """Whether a write transaction is open."""
        return self._depth > 0

    def close(self) -> None:
        """Checkpoint and close (the WAL files go away with the last connection)."""
        with self._lock:
            try:
                if self.path is not None:
                    self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:  # another process holds a read snapshot
                pass
            self.conn.close()
            self.vectors.close()

    # ---------------------------------------------------------------- meta

    def get_meta(self, key: str) -> Any:
        """A stored ``meta`` value (JSON-decoded), or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a ``meta`` value (inside a write)."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # ---------------------------------------------------------------- nodes

    def insert_node(self, node: MemoryNode, vec: np.ndarray, metadata_json: str) -> int:
        """Insert a node with its vector, FTS row and log entry (inside a write)."""
        blob = np.ascontiguousarray(vec, dtype=np.float32).tobytes()
        cur = self.conn.execute(
            "INSERT INTO nodes (id, kind, content, user_id, agent_id, run_id, speaker, timestamp, metadata, "
            "created_at, updated_at, vec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                node.id,
                node.kind,
                node.content,
                node.user_id,
                node.agent_id,
                node.run_id,
                node.speaker,
                node.timestamp,
                metadata_json,
                node.created_at,
                node.updated_at,
                blob,
            ),
        )
        rid = int(cur.lastrowid)  # type: ignore[arg-type]
        self._fts_add(rid, node.content)
        self.conn.execute("INSERT INTO vec_log (rid, op) VALUES (?, 'add')", (rid,))
        self.vectors.put(rid, node.id, vec, (node.user_id, node.agent_id, node.run_id))
        return rid

    def _fts_add(self, rid: int, content: str) -> None:
        toks = tokens(content)
        self.conn.execute("INSERT INTO fts (rowid, content) VALUES (?, ?)", (rid, content))
        self.conn.executemany(
            "INSERT INTO fts_stats VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v",
            (("tokens", len(toks)), ("docs", 1)),
        )
        self.conn.executemany(
            "INSERT INTO fts_terms VALUES (?, 1) ON CONFLICT(term) DO UPDATE SET df = df + 1",
            [(t,) for t in set(toks)],
        )

    def _fts_remove(self, rid: int) -> None:
        row = self.conn.execute("SELECT content FROM fts WHERE rowid = ?", (rid,)).fetchone()
        if row is None:
            return
        toks = tokens(row[0])
        self.conn.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
        self.conn.executemany(
            "UPDATE fts_stats SET v = v - ? WHERE k = ?", ((len(toks), "tokens"), (1, "docs"))
        )
        self.conn.executemany("UPDATE fts_terms SET df = df - 1 WHERE term = ?", [(t,) for t in set(toks)])
        self.conn.executemany("DELETE FROM fts_terms WHERE term = ? AND df <= 0", [(t,) for t in set(toks)])

    def set_content(self, node_id: str, content: str, vec: np.ndarray, updated_at: str) -> None:
        """Replace a node's content and vector (inside a write)."""
        rid = self.rid(node_id)
        blob = np.ascontiguousarray(vec, dtype=np.float32).tobytes()
        self.conn.execute(
            "UPDATE nodes SET content = ?, vec = ?, updated_at = ? WHERE rid = ?",
            (content, blob, updated_at, rid),
        )
        self._fts_remove(rid)
        self._fts_add(rid, content)
        self.conn.execute("INSERT INTO vec_log (rid, op) VALUES (?, 'del')", (rid,))
        self.conn.execute("INSERT INTO vec_log (rid, op) VALUES (?, 'add')", (rid,))
        scope = tuple(
            self.conn.execute("SELECT user_id, agent_id, run_id FROM nodes WHERE rid = ?", (rid,)).fetchone()
        )
        self.vectors.put(rid, node_id, vec, scope)  # type: ignore[arg-type]

    def set_metadata(self, node_id: str, metadata_json: str) -> None:
        """Replace a node's metadata (inside a write)."""
        self.conn.execute("UPDATE nodes SET metadata = ? WHERE id = ?", (metadata_json, node_id))

    def rid(self, node_id: str) -> int:
        """The integer row id of a node.

        Raises:
            MemoryNotFoundError: No such node.
        """
        row = self.conn.execute("SELECT rid FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise MemoryNotFoundError(f"no memory with id {node_id!r}")
        return int(row[0])

    def delete_node(self, node_id: str) -> list[MemoryEdge]:
        """Delete a node, its FTS row and its edges; returns the removed edges (inside a write)."""
        rid = self.rid(node_id)
        edges = self.graph.incident_edges(node_id)
        self.conn.execute("DELETE FROM edges WHERE source = ? OR target = ?", (node_id, node_id))
        self._fts_remove(rid)
        self.conn.execute("DELETE FROM nodes WHERE rid = ?", (rid,))
        self.conn.execute("DELETE FROM tails WHERE node_id = ?", (node_id,))
        self.conn.execute("INSERT INTO vec_log (rid, op) VALUES (?, 'del')", (rid,))
        self.vectors.drop([rid])
        return edges

    def scrub(self) -> None:
        """Rewrite the FTS index without deleted entries and checkpoint the WAL (after erasure)."""
        self.conn.execute("INSERT INTO fts (fts) VALUES ('optimize')")

    def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate it (outside a write)."""
        if self.path is not None and not self._depth:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # pragma: no cover - a reader of another process
                logger.debug("checkpoint deferred: %s", exc)

    # ---------------------------------------------------------------- lexical

    def _df(self, terms: Sequence[str]) -> dict[str, int]:
        """Document frequencies, kept per term with every FTS5 insert and delete."""
        ts = list(dict.fromkeys(terms))
        q = ",".join("?" * len(ts))
        rows = self.conn.execute(
            f"SELECT term, df FROM fts_terms WHERE term IN ({q}) AND df > 0", ts
        ).fetchall()
        return {t: int(d) for t, d in rows}

    def _corpus(self) -> tuple[int, float]:
        """FTS5's row count and mean row length, from the counters kept with every FTS5 change.

        ``count(*)`` would visit every row of a large store on each search.
        """
        got = dict(self.conn.execute("SELECT k, v FROM fts_stats WHERE k IN ('docs', 'tokens')").fetchall())
        n, total = int(got.get("docs", 0)), int(got.get("tokens", 0))
        return n, (total / n if n else 0.0)

    def bm25_top(
        self, query: str, k: int, filters: Mapping[str, str | None], scan_budget: int = 500
    ) -> list[tuple[str, float]]:
        """The ``k`` best FTS5 ``bm25()`` matches inside the scope filter, ``(id, -bm25)`` best first.

        Candidate generation reads the rarest query terms first and stops adding terms once
        their document frequencies sum past ``scan_budget`` (the rarest term is always used);
        terms in half the documents or more are never used (FTS5 floors their idf at 1e-6).
        This bounds the rows SQLite visits on a large store; the candidates are then scored
        with every query term by :meth:`bm25_scores`, and dense search supplies the rest.
        """
        qt = list(dict.fromkeys(tokens(query)))
        if not qt or k <= 0:
            return []
        n, _ = self._corpus()
        df = self._df(qt)
        ranked = sorted((t for t in qt if df.get(t, 0)), key=lambda t: df[t])
        useful: list[str] = []
        total = 0
        for t in ranked:
            if useful and (df[t] >= max(n, 1) / 2 or total + df[t] > scan_budget):
                break
            useful.append(t)
            total += df[t]
        match = fts_query(useful)
        if match is None:
            return []
        sql, params = where_scope(filters, "n")
        rows = self.conn.execute(
            f"SELECT n.id, bm25(fts) FROM fts CROSS JOIN nodes n ON n.rid = fts.rowid "
            f"WHERE fts MATCH ? AND {sql} ORDER BY bm25(fts) LIMIT ?",
            [match, *params, int(k)],
        ).fetchall()
        return [(nid, -float(s)) for nid, s in rows]

    def bm25_scores(
        self, query: str, node_ids: Sequence[str], contents: Sequence[str] | None = None
    ) -> np.ndarray:
        """FTS5's ``bm25()`` of ``query`` for each of ``node_ids`` (as a positive score).

        Computed here with FTS5's formula and the same statistics (document frequencies and
        the token total, kept in ``fts_terms``/``fts_stats`` with every FTS5 change, and the row
        count): asking SQLite for the score of a handful of rows would make it evaluate the
        ``MATCH`` over the whole table. A test checks the numbers against SQLite's ``bm25()``.
        """
        out = np.zeros(len(node_ids), dtype=np.float64)
        qt = list(dict.fromkeys(tokens(query)))
        if not qt or not len(node_ids):
            return out
        if contents is None:
            got = dict(
                r
                for i in range(0, len(node_ids), 900)
                for r in self.conn.execute(
                    f"SELECT id, content FROM nodes WHERE id IN ({','.join('?' * len(node_ids[i : i + 900]))})",
                    list(node_ids[i : i + 900]),
                )
            )
            contents = [got.get(n, "") for n in node_ids]
        n, avgdl = self._corpus()
        if not n:
            return out
        df = self._df(qt)
        idf = {t: max(math.log((n - df[t] + 0.5) / (df[t] + 0.5)), 1e-6) for t in qt if df.get(t)}
        if not idf:
            return out
        for i, text in enumerate(contents):
            toks = tokens(text)
            if not toks:
                continue
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(toks) / avgdl)
            counts: dict[str, int] = {}
            for t in toks:
                if t in idf:
                    counts[t] = counts.get(t, 0) + 1
            out[i] = sum(idf[t] * tf * (BM25_K1 + 1) / (tf + norm) for t, tf in counts.items())
        return out


def is_finite_number(x: object) -> bool:
    """A real number (not a bool) that is finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def store_files(path: Path) -> list[str]:
    """Names of the files in a store directory (for checks)."""
    return sorted(os.listdir(path))
