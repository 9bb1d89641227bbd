"""The storage engine of a :class:`~zjulab.fluxmem.memory.FluxMemory`: SQLite in WAL mode.

One database file, ``STORE_DIR/fluxmem.sqlite3``, holds everything:

* ``nodes`` (one row per memory unit, with its float32 embedding as a blob),
  ``edges``, ``history``, ``trajectories``, ``tails`` (the last message of each conversation
  thread) and ``meta`` (format version, encoder name and dimension, configuration);
* ``fts``, an FTS5 table over node contents (rowid = ``nodes.rid``), updated with every insert
  and delete, whose postings and row sizes give the lexical side of search its candidates,
  ranked by FTS5's ``bm25()`` formula;
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
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.errors import ZjulabError
from zjulab.common.io import atomic_write, remove_stale_temps
from zjulab.fluxmem.errors import (
    FluxStoreEncoderError,
    FluxStoreError,
    FluxStoreVersionError,
    MemoryNotFoundError,
)
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode
from zjulab.fluxmem.validation import check_text

__all__ = [
    "DB_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "HNSW_NAME",
    "SQLGraph",
    "SQLiteStore",
    "VectorCache",
    "fts_query",
]

logger = logging.getLogger(__name__)

FORMAT = "zjulab-fluxmem-sqlite"
FORMAT_VERSION = 2
DB_NAME = "fluxmem.sqlite3"
#: How long a checkpoint waits for other processes' readers (milliseconds).
CHECKPOINT_WAIT_MS = 200
OPTIMIZES_PER_REBUILD = 250
MMAP_BYTES = 1 << 30  # address space only; pages are read on demand
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # what FTS5's unicode61 tokenizer calls a token
BM25_K1 = 1.2  # FTS5's bm25() defaults
BM25_B = 0.75
_POSTINGS = "fluxmem_postings"  # the temp fts5vocab tables over ``fts``: one row per occurrence,
_TERMS = "fluxmem_terms"  # one row per term (rows holding it, occurrences)
# above this many occurrences of the chosen terms FTS5's own bm25() ranks faster (measured)
POSTINGS_MAX = 4096


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
_LIGHT_COLS = "rid, id, kind, content, user_id, agent_id, run_id, NULL, NULL, '{}', '', ''"
SCOPE_FIELDS = ("user_id", "agent_id", "run_id")


def scope_wanted(filters: Mapping[str, str | None]) -> list[tuple[int, str]]:
    """``(position in SCOPE_FIELDS, value)`` of every scope id ``filters`` sets."""
    return [(i, v) for i, f in enumerate(SCOPE_FIELDS) if (v := filters.get(f)) is not None]


def scope_matches(ids: Sequence[str | None], wanted: Sequence[tuple[int, str]]) -> bool:
    """Whether a row's ``(user_id, agent_id, run_id)`` holds every wanted scope id."""
    return all(ids[i] == v for i, v in wanted)


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


HNSW_NAME = "fluxmem.hnsw"
_HNSW_MAGIC = b"ZJFXHNSW"
_HNSW_VERSION = 1


def _store_id(conn: sqlite3.Connection) -> str | None:
    """The random id a store gets when it is created (a copy made by ``save`` keeps it)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    return None if row is None else json.loads(row[0])


class _HNSW:
    """An HNSW graph (faiss ``IndexHNSWFlat``, inner product) over vectors addressed by rid.

    faiss cannot remove a vector from an HNSW graph, so a vector's *label* (its position in
    the graph) maps to its rid through ``label_rid``, and a removed or replaced vector leaves a
    tombstone that an ``IDSelectorBitmap`` hides from every search; the graph is rebuilt
    without them once they are many. Changes made inside a write transaction are recorded and
    undone if it rolls back.
    """

    def __init__(self, faiss: Any, dim: int, m: int, ef_construction: int, ef_search: int) -> None:
        self._faiss = faiss
        self.dim, self.m, self.ef_construction, self.ef_search = dim, m, ef_construction, ef_search
        self.index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self._storage = faiss.downcast_index(self.index.storage)
        self.label_rid = np.empty(0, dtype=np.int64)  # label -> rid
        self.alive = np.empty(0, dtype=bool)  # label -> not a tombstone
        self.rid_label = np.empty(0, dtype=np.int64)  # rid -> label of its live vector, -1 if none
        self.n = 0  # labels used
        self.live = 0
        self._txn: list[tuple[bool, int, int]] | None = None  # (added?, rid, label)

    @property
    def dead(self) -> int:
        return self.n - self.live

    def _grow(self, need_labels: int, max_rid: int) -> None:
        if need_labels > len(self.label_rid):
            cap = max(need_labels, 2 * len(self.label_rid), 1024)
            lr, al = np.full(cap, -1, dtype=np.int64), np.zeros(cap, dtype=bool)
            lr[: self.n], al[: self.n] = self.label_rid[: self.n], self.alive[: self.n]
            self.label_rid, self.alive = lr, al
        if max_rid >= len(self.rid_label):
            rl = np.full(max(max_rid + 1, 2 * len(self.rid_label), 1024), -1, dtype=np.int64)
            rl[: len(self.rid_label)] = self.rid_label
            self.rid_label = rl

    def xb(self) -> np.ndarray:
        """A view of the stored vectors, one row per label (valid until the next add)."""
        if not self.index.ntotal:
            return np.zeros((0, self.dim), dtype=np.float32)
        ptr = self._storage.get_xb()
        return self._faiss.rev_swig_ptr(ptr, self.index.ntotal * self.dim).reshape(-1, self.dim)

    def add_with_ids(self, vecs: np.ndarray, rids: np.ndarray) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        rids = np.asarray(rids, dtype=np.int64)
        if not len(rids):
            return
        self.remove_ids(rids[self._has(rids)])  # a replaced vector leaves a tombstone
        start = self.n
        self._grow(start + len(rids), int(rids.max()))
        self.index.add(vecs)
        labels = np.arange(start, start + len(rids), dtype=np.int64)
        self.label_rid[labels] = rids
        self.alive[labels] = True
        self.rid_label[rids] = labels
        self.n += len(rids)
        self.live += len(rids)
        if self._txn is not None:
            self._txn.extend((True, int(r), int(lab)) for r, lab in zip(rids, labels))

    def _has(self, rids: np.ndarray) -> np.ndarray:
        inside = rids < len(self.rid_label)
        out = np.zeros(len(rids), dtype=bool)
        out[inside] = self.rid_label[rids[inside]] >= 0
        return out

    def labels_of(self, rids: np.ndarray) -> np.ndarray:
        """Labels of the live vectors among ``rids`` (unknown rids are skipped)."""
        rids = np.asarray(rids, dtype=np.int64)
        rids = rids[rids < len(self.rid_label)]
        labels = self.rid_label[rids]
        return labels[labels >= 0]

    def remove_ids(self, rids: np.ndarray) -> None:
        for r in np.asarray(rids, dtype=np.int64).tolist():
            if r >= len(self.rid_label) or self.rid_label[r] < 0:
                continue
            label = int(self.rid_label[r])
            self.rid_label[r] = -1
            self.alive[label] = False
            self.live -= 1
            if self._txn is not None:
                self._txn.append((False, r, label))

    def reconstruct_batch(self, rids: np.ndarray) -> np.ndarray:
        return self.xb()[self.rid_label[np.asarray(rids, dtype=np.int64)]]

    def begin(self) -> None:
        self._txn = []

    def commit(self) -> int:
        """End the transaction; returns how many changes it made."""
        done = len(self._txn or ())
        self._txn = None
        return done

    def rollback(self) -> None:
        for added, rid, label in reversed(self._txn or ()):
            if added:  # the label becomes a tombstone
                self.alive[label] = False
                self.rid_label[rid] = -1
                self.live -= 1
            else:
                self.alive[label] = True
                self.rid_label[rid] = label
                self.live += 1
        self._txn = None

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rids)`` of the top ``k`` live vectors (among ``allowed`` rids), -1 padded.

        A scope that admits few of the vectors is scanned exactly (faiss's flat scan with the
        same selector): HNSW with a sparse filter would walk most of the graph and lose
        recall. An HNSW search that returns fewer than ``k`` of the admitted vectors (the
        filter cut the graph's paths) is redone exactly too.
        """
        faiss = self._faiss
        if allowed is None:
            members = self.live
            mask = None if self.live == self.n else self.alive[: self.n]
        else:
            labels = self.labels_of(allowed)
            members = len(labels)
            mask = np.zeros(self.n, dtype=bool)
            mask[labels] = True
        k = min(k, members)
        nq = len(q)
        if k <= 0:
            return np.zeros((nq, 0), dtype=np.float32), np.zeros((nq, 0), dtype=np.int64)
        bits = None if mask is None else np.packbits(mask, bitorder="little")
        sel = None if bits is None else faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))
        exact = self.scan_exactly(members)
        if not exact:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if sel is not None:
                params.sel = sel
            scores, labels_out = self.index.search(q, k, params=params)
            exact = bool((labels_out < 0).any())
        if exact:
            params = faiss.SearchParameters()
            if sel is not None:
                params.sel = sel
            scores, labels_out = self._storage.search(q, k, params=params)
        rids = np.where(labels_out >= 0, self.label_rid[np.maximum(labels_out, 0)], -1)
        return scores, rids

    def scan_exactly(self, members: int) -> bool:
        """Whether a search admitting ``members`` vectors scans them instead of the graph.

        A flat scan of a few thousand vectors costs about what the graph walk does; below a
        tenth of the graph a filtered walk mostly visits vectors the filter rejects.
        """
        return members < max(4 * self.ef_search, self.n // 10)

    # ------------------------------------------------------------ persistence

    def save(self, path: Path, seq: int, seq_row: tuple[int, str], store_id: str | None) -> None:
        """Write the graph (not the vectors, which stay in the database) atomically."""
        head = json.dumps(
            {
                "version": _HNSW_VERSION,
                "dim": self.dim,
                "m": self.m,
                "ef_construction": self.ef_construction,
                "labels": self.n,
                "seq": seq,
                "seq_rid": seq_row[0],
                "seq_op": seq_row[1],
                "store": store_id,
            }
        ).encode()
        with atomic_write(path, "wb") as fh:
            fh.write(_HNSW_MAGIC + struct.pack("<Q", len(head)) + head)
            fh.write(self.label_rid[: self.n].tobytes())
            fh.write(self.alive[: self.n].astype(np.uint8).tobytes())
            writer = self._faiss.PyCallbackIOWriter(fh.write)
            self._faiss.write_index(self.index, writer, self._faiss.IO_FLAG_SKIP_STORAGE)
            del writer

    @classmethod
    def load(
        cls, faiss: Any, path: Path, dim: int, m: int, ef_construction: int, ef_search: int, max_rid: int
    ) -> tuple[_HNSW, dict[str, Any]] | None:
        """The graph saved at ``path`` without its vectors, or None when it cannot be used.

        ``max_rid`` bounds the rids a graph of this store can name (the change log's largest).
        """
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
            if data[:8] != _HNSW_MAGIC:
                return None
            (hlen,) = struct.unpack("<Q", data[8:16])
            head = json.loads(data[16 : 16 + hlen])
            n = int(head["labels"])
            if (head["version"], head["dim"], head["m"], head["ef_construction"]) != (
                _HNSW_VERSION,
                dim,
                m,
                ef_construction,
            ):
                return None
            pos = 16 + hlen
            label_rid = np.frombuffer(data, dtype=np.int64, count=n, offset=pos).copy()
            pos += 8 * n
            alive = np.frombuffer(data, dtype=np.uint8, count=n, offset=pos).astype(bool)
            pos += n
            cursor = [pos]

            def read(size: int) -> bytes:
                chunk = data[cursor[0] : cursor[0] + size]
                cursor[0] += size
                return chunk

            live = label_rid[alive]
            if len(live) and (live.min() < 1 or live.max() > max_rid or len(np.unique(live)) != len(live)):
                raise ValueError("its label map names rids this store never had")
            head["seq"], head["seq_rid"] = int(head["seq"]), int(head["seq_rid"])
            if not (0 < head["seq"] < 1 << 62 and 0 < head["seq_rid"] < 1 << 62):
                raise ValueError("its change-log position is out of range")
            reader = faiss.PyCallbackIOReader(read)
            index = faiss.read_index(reader, faiss.IO_FLAG_SKIP_STORAGE)
            del reader
        except (OSError, ValueError, KeyError, TypeError, OverflowError, struct.error, RuntimeError) as exc:
            logger.info("%s: not usable (%s); the HNSW index is rebuilt", path, exc)
            return None
        if index.ntotal != n or not isinstance(index, faiss.IndexHNSWFlat):
            return None
        self = cls(faiss, dim, m, ef_construction, ef_search)
        self.index = index
        self.label_rid, self.alive = label_rid, alive
        self.n = n
        live = label_rid[alive]
        self.live = len(live)
        if self.live:
            self._grow(n, int(live.max()))
            self.rid_label[live] = np.flatnonzero(alive)
        return self, head

    def attach_vectors(self, vecs: np.ndarray) -> None:
        """Give a loaded graph its vectors (one row per label)."""
        storage = self._faiss.IndexFlatIP(self.dim)
        storage.add(np.ascontiguousarray(vecs, dtype=np.float32))
        self.index.storage = storage
        storage.this.disown()  # the index owns (and frees) it from now on
        self.index.own_fields = True
        self._storage = self._faiss.downcast_index(self.index.storage)


class VectorCache:
    """This process's faiss view of ``nodes.vec``, kept in step through ``vec_log``.

    The index is exact (a flat scan, ids are the nodes' integer ``rid``) for small stores, an
    HNSW graph from ``hnsw_min`` vectors on (switched to in-process as a store grows, its graph
    persisted next to the database), or an IVF index from ``ivf_min`` on when that is asked
    for. :meth:`sync` applies the log entries past the last one seen; :meth:`invalidate` forces a
    rebuild from the table on the next sync.
    """

    def __init__(
        self,
        dim: int,
        ivf_min: int | None = None,
        nprobe: int = 64,
        *,
        hnsw_min: int | None = None,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 80,
        hnsw_ef_search: int = 256,
        index_path: Path | None = None,
    ) -> None:
        import faiss

        self._faiss = faiss
        self.dim = dim
        self.ivf_min = ivf_min
        self.nprobe = nprobe
        self.hnsw_min = None if ivf_min is not None else hnsw_min
        self.hnsw_params = (hnsw_m, hnsw_ef_construction, hnsw_ef_search)
        self.index_path = index_path
        if index_path is not None and index_path.parent.is_dir():
            remove_stale_temps(index_path)  # a save that a kill interrupted
        self.kind = "exact"
        self._index: Any = None
        self.rid_to_id: dict[int, str] = {}
        self.id_to_rid: dict[str, int] = {}
        self.seq = -1
        self.rid_scope: dict[int, tuple[str | None, str | None, str | None]] = {}
        # scope filter -> (committed rids array, rids added since); kept up to date on put
        self._filters: dict[tuple[Any, ...], tuple[np.ndarray, list[int]]] = {}
        # (rid, id before, scope before) of each change of the open write, to undo a rollback
        self._undo: list[tuple[int, str | None, tuple[str | None, str | None, str | None] | None]] | None = (
            None
        )
        self._unsaved = 0  # HNSW changes not in the saved graph

    @property
    def approximate(self) -> bool:
        """Whether searches are approximate (an HNSW or IVF index)."""
        return self.kind != "exact"

    def __len__(self) -> int:
        return len(self.rid_to_id)

    def invalidate(self) -> None:
        """Drop the cache (rebuilt from the database on the next :meth:`sync`)."""
        self._index = None
        self.kind = "exact"
        self.rid_to_id.clear()
        self.id_to_rid.clear()
        self.rid_scope.clear()
        self.seq = -1
        self._filters.clear()
        self._undo = None

    def _hnsw(self) -> _HNSW:
        m, efc, efs = self.hnsw_params
        return _HNSW(self._faiss, self.dim, m, efc, efs)

    def _rebuild(self, conn: sqlite3.Connection) -> None:
        faiss = self._faiss
        n = int(conn.execute("SELECT count(*) FROM nodes").fetchone()[0])
        self.rid_to_id.clear()
        self.id_to_rid.clear()
        self.rid_scope.clear()
        self._filters.clear()
        self._undo = None
        if self.hnsw_min is not None and n >= self.hnsw_min:
            if self._load_hnsw(conn, n):
                return
            self.kind, self._index = "hnsw", self._hnsw()
        elif self.ivf_min is not None and n >= self.ivf_min:
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
            self.kind, self._index = "ivf", ivf
        else:
            self.kind, self._index = "exact", faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
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
        if self.kind == "hnsw":
            self._save(conn)

    def _load_hnsw(self, conn: sqlite3.Connection, n: int) -> bool:
        """Reuse the saved graph: its vectors from the database, the log replayed past it."""
        if self.index_path is None or not self.index_path.exists():
            return False
        m, efc, efs = self.hnsw_params
        (max_rid,) = conn.execute("SELECT coalesce(max(rid), 0) FROM vec_log").fetchone()
        got = _HNSW.load(self._faiss, self.index_path, self.dim, m, efc, efs, int(max_rid))
        if got is None:
            return False
        g, head = got
        row = conn.execute("SELECT rid, op FROM vec_log WHERE seq = ?", (int(head["seq"]),)).fetchone()
        if (
            row is None
            or (int(row[0]), row[1]) != (head["seq_rid"], head["seq_op"])
            or head.get("store") != _store_id(conn)
        ):
            logger.info(
                "%s belongs to another state of the store; the HNSW index is rebuilt", self.index_path
            )
            return False
        vecs = np.zeros((g.n, self.dim), dtype=np.float32)
        for rid, nid, blob, u, a, r in conn.execute(
            "SELECT rid, id, vec, user_id, agent_id, run_id FROM nodes"
        ):
            label = int(g.rid_label[rid]) if rid < len(g.rid_label) else -1
            if label < 0:
                continue  # added after the saved graph: replayed from the log below
            vecs[label] = np.frombuffer(blob, dtype=np.float32)
            self.rid_to_id[rid] = nid
            self.id_to_rid[nid] = rid
            self.rid_scope[rid] = (u, a, r)
        # live in the saved graph but gone from the database: deleted since (the log says so)
        gone = np.asarray([r for r in g.label_rid[g.alive[: g.n]].tolist() if r not in self.rid_to_id])
        g.remove_ids(gone)
        g.attach_vectors(vecs)
        self.kind, self._index, self.seq = "hnsw", g, int(head["seq"])
        self.sync(conn)
        if len(self.rid_to_id) != n or g.live != n:
            logger.info("%s disagrees with the database; the HNSW index is rebuilt", self.index_path)
            self.invalidate()
            return False
        if g.dead > g.n // 4:
            self._compact(conn)
        return True

    def _add_raw(self, rids: list[int], blobs: list[bytes]) -> None:
        if any(len(b) != 4 * self.dim for b in blobs):
            self.invalidate()  # nothing of this sync is trusted
            raise FluxStoreEncoderError(
                f"the store holds vectors of another size than this handle's {self.dim}-d ones "
                "(re-embedded by another process?); reopen it with the store's encoder"
            )
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
        if self.kind == "hnsw":
            self._unsaved += len(rows)

    def _note(self, rid: int) -> None:
        scope = self.rid_scope[rid]
        for key, (_, pending) in self._filters.items():
            if all(want is None or want == have for want, have in zip(key, scope)):
                pending.append(rid)

    def _remember(self, rid: int) -> None:
        if self._undo is not None:
            self._undo.append((rid, self.rid_to_id.get(rid), self.rid_scope.get(rid)))

    def put(
        self, rid: int, node_id: str, vec: np.ndarray, scope: tuple[str | None, str | None, str | None]
    ) -> None:
        """Index one vector now (inside the transaction that wrote it)."""
        if rid in self.rid_to_id:
            self.drop([rid])
        self._remember(rid)
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
            self._remember(r)
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
        if allowed is not None and len(allowed) == len(self.rid_to_id):
            allowed = None
        if self.kind == "hnsw":
            scores, ids = self._index.search(q, k, allowed)
        elif allowed is None:
            scores, ids = self._index.search(q, k)
        else:
            sel = self._faiss.IDSelectorBatch(allowed)
            if self.kind == "ivf":
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

    def begin(self) -> None:
        """Called once a write transaction holds the lock and the cache is in step."""
        if self.kind == "hnsw":
            self._undo = []
            self._index.begin()

    def committed(self, conn: sqlite3.Connection) -> None:
        """Called after a write commits (faiss already holds the transaction's vectors).

        Switches a store that has grown to ``hnsw_min`` vectors to the HNSW index, rebuilds a
        graph that is half tombstones, and saves the graph every so many changes.
        """
        self._undo = None
        if self.kind == "hnsw":
            self._unsaved += self._index.commit()
            if self._index.dead > self._index.n // 2:
                self._compact(conn)
            elif self._unsaved >= max(1000, len(self.rid_to_id) // 20):
                self._save(conn)
        elif self.kind == "exact" and self.hnsw_min is not None and len(self.rid_to_id) >= self.hnsw_min:
            self._switch_to_hnsw(conn)

    def discard(self) -> None:
        """Called after a write rolls back: undo its changes (HNSW) or rebuild on the next sync."""
        if self.kind != "hnsw" or self._undo is None:
            self.invalidate()
            return
        self._index.rollback()
        for rid, nid, scope in reversed(self._undo):
            cur = self.rid_to_id.pop(rid, None)
            if cur is not None:
                self.id_to_rid.pop(cur, None)
            self.rid_scope.pop(rid, None)
            if nid is not None:
                self.rid_to_id[rid] = nid
                self.id_to_rid[nid] = rid
                self.rid_scope[rid] = scope  # type: ignore[assignment]
        self._undo = None
        self._filters.clear()

    def _graph_of(self, rids: np.ndarray) -> _HNSW:
        """A new graph holding the current index's vectors of ``rids``, in that order."""
        g = self._hnsw()
        for i in range(0, len(rids), 8192):
            chunk = rids[i : i + 8192]
            g.add_with_ids(self._index.reconstruct_batch(chunk), chunk)
        return g

    def _switch_to_hnsw(self, conn: sqlite3.Connection) -> None:
        t0 = time.perf_counter()
        rids = np.asarray(sorted(self.rid_to_id), dtype=np.int64)
        self.kind, self._index = "hnsw", self._graph_of(rids)
        self.sync(conn)  # own entries, so the saved graph's watermark is the newest
        self._save(conn)
        logger.info("%d vectors: switched to an HNSW index in %.1f s", len(rids), time.perf_counter() - t0)

    def _compact(self, conn: sqlite3.Connection) -> None:
        """Rebuild the graph from its live vectors (dropping the tombstones)."""
        old: _HNSW = self._index
        self._index = self._graph_of(old.label_rid[np.flatnonzero(old.alive[: old.n])])
        self._save(conn)
        logger.info("HNSW index rebuilt without %d removed vectors", old.n - old.live)

    def _save(self, conn: sqlite3.Connection) -> None:
        if self.index_path is None:
            return
        try:
            saved = self.save_graph(conn, self.index_path)
        except (OSError, RuntimeError, ZjulabError) as exc:  # unwritable: rebuilt on the next open
            logger.warning("cannot save the HNSW index to %s: %s", self.index_path, exc)
            return
        if saved:
            self._unsaved = 0

    def save_graph(self, conn: sqlite3.Connection, path: Path, store_id: str | None = None) -> bool:
        """Write the HNSW graph to ``path``; False when there is none.

        ``store_id``: the id of the store the graph is for (a copy's; default this store's).
        """
        if self.kind != "hnsw":
            return False
        row = conn.execute("SELECT rid, op FROM vec_log WHERE seq = ?", (self.seq,)).fetchone()
        if row is None:
            return False
        self._index.save(path, self.seq, (int(row[0]), row[1]), store_id or _store_id(conn))
        return True

    def persist(self, conn: sqlite3.Connection) -> None:
        """Save an HNSW graph with unsaved changes (before the store closes)."""
        if self.kind == "hnsw" and self._unsaved and not self._undo:
            self.sync(conn)
            self._save(conn)

    def close(self) -> None:
        """Nothing to release (the index lives in this process)."""

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
            # rows another process committed since the last sync are not indexed yet: the next
            # sync notes them (counting them here would make a scope look like "every vector")
            arr = arr[np.isin(arr, np.fromiter(self.rid_to_id, dtype=np.int64, count=len(self.rid_to_id)))]
            if len(self._filters) > 256:
                self._filters.clear()
            entry = (arr, [])
            self._filters[key] = entry
        arr, pending = entry
        if pending:
            arr = np.concatenate([arr, np.asarray(pending, dtype=np.int64)])
            self._filters[key] = (arr, [])
        return None if len(arr) == len(self.rid_to_id) else arr


class _DocSizes:
    """FTS5's token count of every row (``fts_docsize``), by rid, for lexical ranking.

    Read whole on first use (one scan, 40-60 ms at 100K rows), then kept in step like the vector
    cache: a row's size changes only with its content, and every content change (insert,
    update, delete, reset) writes a ``vec_log`` entry for its rid, so :meth:`refresh` forgets
    the rids of the entries past its watermark, and the store's own writes forget theirs
    (:meth:`forget`) as they happen. A forgotten or unknown rid is read again when needed.
    It is read only in a snapshot of committed rows (the postings ranking never runs inside a
    write), so nothing it keeps can be rolled back.
    """

    def __init__(self) -> None:
        self.sizes: np.ndarray | None = None  # rid -> size, -1 when unknown
        self.seq = 0

    def refresh(self, conn: sqlite3.Connection) -> None:
        """Forget the rows changed since the watermark (loading every size the first time)."""
        if self.sizes is None:
            (self.seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM vec_log").fetchone()
            got = conn.execute("SELECT id, sz FROM fts_docsize").fetchall()
            top = max((r for r, _ in got), default=0)
            sizes = np.full(top + 1024, -1, dtype=np.int32)
            for r, sz in got:
                sizes[r] = sz[0] if sz[0] < 0x80 else _varint(sz)
            self.sizes = sizes
            return
        many = max(4096, len(self.sizes) // 8)
        rows = conn.execute(
            "SELECT seq, rid FROM vec_log WHERE seq > ? ORDER BY seq LIMIT ?", (self.seq, many + 1)
        ).fetchall()
        if not rows:
            return
        if len(rows) > many:  # a bulk change (a large add, another process's import): read anew
            self.clear()
            self.refresh(conn)
            return
        for _, r in rows:
            self.forget(r)
        self.seq = int(rows[-1][0])

    def forget(self, rid: int) -> None:
        """Drop what is known of ``rid`` (its content is being changed)."""
        if self.sizes is not None and 0 <= rid < len(self.sizes):
            self.sizes[rid] = -1

    def clear(self) -> None:
        """Drop every size (read whole again on the next refresh)."""
        self.sizes = None
        self.seq = 0

    def of(self, conn: sqlite3.Connection, rids: np.ndarray) -> np.ndarray:
        """The sizes of ``rids`` (FTS5 rows), read from ``fts_docsize`` where unknown."""
        sizes = self.sizes
        out = np.full(len(rids), -1, dtype=np.int64)
        if sizes is not None:
            inside = rids < len(sizes)
            out[inside] = sizes[rids[inside]]
        missing = rids[out < 0].tolist()
        if not missing:
            return out
        got: dict[int, int] = {}
        for i in range(0, len(missing), 900):
            chunk = missing[i : i + 900]
            q = ",".join("?" * len(chunk))
            for r, sz in conn.execute(f"SELECT id, sz FROM fts_docsize WHERE id IN ({q})", chunk):
                got[r] = sz[0] if sz[0] < 0x80 else _varint(sz)
        pos = np.flatnonzero(out < 0)
        out[pos] = [got.get(r, 0) for r in missing]
        if sizes is not None:
            top = max(missing)
            if top >= len(sizes):
                grown = np.full(max(top + 1, 2 * len(sizes)), -1, dtype=np.int32)
                grown[: len(sizes)] = sizes
                self.sizes = sizes = grown
            for r in missing:
                if r in got:
                    sizes[r] = got[r]
        return out


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
        """The nodes among ``node_ids`` that exist, by id.

        ``light``: only id, kind, content and scope ids are read (speaker, timestamp, times and
        metadata come back empty), what ranking needs.
        """
        out: dict[str, MemoryNode] = {}
        ids = list(dict.fromkeys(node_ids))
        cols = _LIGHT_COLS if light else _NODE_COLS
        # an id's rid never changes, so the vector cache's map finds the rows by primary key
        # (one b-tree descent instead of two); ids it does not know are looked up by id
        known = getattr(self._s.vectors, "id_to_rid", None) or {}
        rids = [known[i] for i in ids if i in known]
        rest = [i for i in ids if i not in known]
        for key, keys in (("rid", rids), ("id", rest)):
            for i in range(0, len(keys), 900):
                chunk = keys[i : i + 900]
                q = ",".join("?" * len(chunk))
                for row in self._c.execute(f"SELECT {cols} FROM nodes WHERE {key} IN ({q})", chunk):
                    out[row[1]] = _node(row)
        return out

    def scoped_contents(self, node_ids: Sequence[str], scope: Mapping[str, str | None]) -> dict[str, str]:
        """``{id: content}`` of the nodes among ``node_ids`` that exist and lie in ``scope``.

        What ranking reads of a candidate, as plain values (no :class:`MemoryNode`).
        """
        wanted = scope_wanted(scope)
        out: dict[str, str] = {}
        ids = list(dict.fromkeys(node_ids))
        known = getattr(self._s.vectors, "id_to_rid", None) or {}
        rids, rest = [], []
        for i in ids:
            r = known.get(i)
            if r is None:
                rest.append(i)
            else:
                rids.append(r)
        for key, keys in (("rid", rids), ("id", rest)):
            for i in range(0, len(keys), 900):
                chunk = keys[i : i + 900]
                q = ",".join("?" * len(chunk))
                for nid, content, *sc in self._c.execute(
                    f"SELECT id, content, user_id, agent_id, run_id FROM nodes WHERE {key} IN ({q})", chunk
                ):
                    if scope_matches(sc, wanted):
                        out[nid] = content
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

    def __init__(self, path: Path | None, dim: int, *, vectors: bool = True) -> None:
        self.path = path
        self.dim = dim
        self._lock = threading.RLock()
        self._depth = 0
        self._sizes = _DocSizes()  # FTS5 row sizes for lexical ranking
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
            remove_stale_temps(path / DB_NAME)  # a save into this folder that a kill interrupted
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
                # reads through a memory map: a search reads ~100 rows scattered over a large
                # file, and copying each page out of the OS cache cost about half of that
                self.conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            self.conn.execute("PRAGMA secure_delete = ON")
            with self.write():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)  # idempotent (IF NOT EXISTS)
                # the row counter of stores written before it was kept: counted once
                if self.conn.execute("SELECT 1 FROM fts_stats WHERE k = 'docs'").fetchone() is None:
                    self.conn.execute("INSERT INTO fts_stats (k, v) SELECT 'docs', count(*) FROM fts")
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc).lower():
                raise FluxStoreError(
                    f"{target}: the store is locked by another connection or process ({exc}); "
                    "it was not opened"
                ) from exc
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
        if self.get_meta("store_id") is None:  # ties a saved HNSW graph to this store
            with self.write():
                self.set_meta("store_id", uuid.uuid4().hex)
        # the FTS5 index's postings (term, row, column, offset), read by lexical candidate
        # generation; a TEMP table of this connection, so the store file is not changed
        try:
            self.conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{_POSTINGS} USING fts5vocab(main, 'fts', 'instance')"
            )
            self.conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{_TERMS} USING fts5vocab(main, 'fts', 'row')"
            )
            self._postings = True
        except sqlite3.Error as exc:  # pragma: no cover - an SQLite without fts5vocab
            logger.debug("no fts5vocab table (%s): lexical candidates are ranked by FTS5 bm25()", exc)
            self._postings = False
        # the caller may attach a configured cache instead (before the first read)
        self.vectors: Any = VectorCache(dim) if vectors else None
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
                    stored_dim = self.get_meta("dim")
                    if stored_dim is not None and stored_dim != self.dim:
                        # another process re-embedded the store to another dimension since this
                        # one opened it: writing this process's vectors would mix two sizes
                        raise FluxStoreEncoderError(
                            f"{self.path}: the store now holds {stored_dim}-d vectors, this handle "
                            f"writes {self.dim}-d ones; reopen it with the store's encoder"
                        )
                    self.vectors.sync(self.conn)
                    begin = getattr(self.vectors, "begin", None)
                    if begin is not None:
                        begin()
                yield
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                if getattr(self, "vectors", None) is not None:
                    self.vectors.discard()
                raise
            self._depth = 0
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # never leave the connection inside a transaction every later write would hit
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if getattr(self, "vectors", None) is not None:
                    self.vectors.discard()
                raise FluxStoreError(
                    f"{self.path}: the change could not be committed ({exc}); it was rolled back"
                ) from exc
            if getattr(self, "vectors", None) is not None:
                self.vectors.committed(self.conn)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read under the lock from one snapshot of the store (one SQLite read transaction).

        Several statements then see the same committed state: a search's ranking and the rows
        it returns cannot be torn apart by another process's delete or reset committing in
        between. Re-entrant; inside a write or an outer snapshot it adds nothing.
        """
        with self._lock:
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error:  # never leave this read open on the shared connection
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise

    @contextmanager
    def read(self, *, snapshot: bool = True) -> Iterator[None]:
        """Bring the vector cache up to date, then read under the lock (in one snapshot)."""
        with self._lock, self.snapshot() if snapshot else nullcontext():
            if not self._depth and self.vectors is not None:
                self.vectors.sync(self.conn)
            yield

    @property
    def in_write(self) -> bool:
        """Whether a write transaction is open."""
        return self._depth > 0

    def close(self) -> None:
        """Checkpoint and close (the WAL files go away with the last connection)."""
        with self._lock:
            persist = getattr(self.vectors, "persist", None)
            if persist is not None:
                persist(self.conn)
            self.checkpoint()
            self.conn.close()
            if self.vectors is not None:
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
        self._sizes.forget(rid)
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
        self._sizes.forget(rid)
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
        # SQLite 3.40's FTS5 reports its own index malformed after about a thousand
        # delete + optimize rounds; a rebuild (from the table's own content) every
        # OPTIMIZES_PER_REBUILD rounds resets the index structure before that happens
        (done,) = self.conn.execute(
            "INSERT INTO fts_stats VALUES ('optimizes', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1 RETURNING v"
        ).fetchone()
        if done >= OPTIMIZES_PER_REBUILD:
            self.conn.execute("INSERT INTO fts (fts) VALUES ('rebuild')")
            self.conn.execute("UPDATE fts_stats SET v = 0 WHERE k = 'optimizes'")

    def checkpoint(self) -> None:
        """Move the WAL into the database file and truncate it (outside a write)."""
        # under the store lock: a checkpoint stepping while another thread's COMMIT runs on this
        # connection makes that COMMIT fail ("SQL statements in progress")
        with self._lock:
            if self.path is not None and not self._depth and not self.conn.in_transaction:
                # a reader of another process on an older snapshot makes TRUNCATE wait, holding
                # the writer lock: it waits a moment at most, and the next checkpoint (the next
                # erasure, save or close) finishes the job
                self.conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
                try:
                    busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    if busy:
                        logger.debug("checkpoint deferred: a reader holds an older snapshot")
                except sqlite3.Error as exc:  # pragma: no cover - a reader of another process
                    logger.debug("checkpoint deferred: %s", exc)
                finally:
                    self.conn.execute("PRAGMA busy_timeout = 60000")

    # ---------------------------------------------------------------- lexical

    def _corpus(self) -> tuple[int, float]:
        """FTS5's row count and mean row length (see :meth:`lexical_stats`)."""
        n, avgdl, _ = self.lexical_stats("")
        return n, avgdl

    def lexical_stats(self, query: str) -> tuple[int, float, dict[str, int]]:
        """``(rows, mean row length, {term: document frequency})`` for ``query``'s terms.

        One read of the counters kept with every FTS5 change; a search passes the result to
        :meth:`bm25_top` and :meth:`bm25_scores` so both see the same statistics.
        """
        qt = list(dict.fromkeys(tokens(query)))
        q = ",".join("?" * len(qt))
        rows = self.conn.execute(
            f"SELECT 0, k, v FROM fts_stats WHERE k IN ('docs', 'tokens') "
            f"UNION ALL SELECT 1, term, df FROM fts_terms WHERE term IN ({q}) AND df > 0",
            qt,
        ).fetchall()
        stats = {k: int(v) for tag, k, v in rows if tag == 0}
        n, total = stats.get("docs", 0), stats.get("tokens", 0)
        return n, (total / n if n else 0.0), {t: int(d) for tag, t, d in rows if tag == 1}

    def bm25_top(
        self,
        query: str,
        k: int,
        filters: Mapping[str, str | None],
        scan_budget: int = 500,
        stats: tuple[int, float, dict[str, int]] | None = None,
    ) -> list[tuple[str, float]]:
        """The ``k`` best FTS5 ``bm25()`` matches inside the scope filter, ``(id, -bm25)`` best first.

        Candidate generation reads the rarest query terms first and stops adding terms once
        their document frequencies sum past ``scan_budget`` (the rarest term is always used);
        terms in half the documents or more are never used (FTS5 floors their idf at 1e-6).
        This bounds the rows SQLite visits on a large store; the candidates are then scored
        with every query term by :meth:`bm25_scores`, and dense search supplies the rest.

        The ranking is that of ``ORDER BY bm25(fts) LIMIT k`` over a ``MATCH`` of those terms
        (ties broken by the lower rowid, which SQLite's top-``k`` sort keeps). For terms that
        are plain ASCII words it is computed from the index's postings and row sizes with
        FTS5's formula and operation order (the same doubles, see :meth:`_bm25_postings`);
        FTS5's own ``bm25()`` ranks the others (and every term on an SQLite without
        ``fts5vocab``).
        """
        qt = list(dict.fromkeys(tokens(query)))
        if not qt or k <= 0:
            return []
        n, _, df = stats if stats is not None else self.lexical_stats(query)
        ranked = sorted((t for t in qt if df.get(t, 0)), key=lambda t: df[t])
        useful: list[str] = []
        total = 0
        for t in ranked:
            if useful and (df[t] >= max(n, 1) / 2 or total + df[t] > scan_budget):
                break
            useful.append(t)
            total += df[t]
        if useful and self._postings and all(t.isascii() for t in useful):
            with self._lock:
                if not self._depth:
                    # inside a write FTS5 keeps its row count and token total in memory until
                    # COMMIT: only FTS5's own bm25() sees them there
                    return self._bm25_postings(useful, k, filters)
        return self._bm25_fts5(useful, k, filters)

    def _bm25_fts5(
        self, terms: Sequence[str], k: int, filters: Mapping[str, str | None]
    ) -> list[tuple[str, float]]:
        """:meth:`bm25_top`'s ranking by FTS5 itself (``ORDER BY bm25(fts)``)."""
        match = fts_query(terms)
        if match is None:
            return []
        sql, params = where_scope(filters, "n")
        rows = self.conn.execute(
            f"SELECT n.id, bm25(fts) FROM fts CROSS JOIN nodes n ON n.rid = fts.rowid "
            f"WHERE fts MATCH ? AND {sql} ORDER BY bm25(fts) LIMIT ?",
            [match, *params, int(k)],
        ).fetchall()
        return [(nid, -float(s)) for nid, s in rows]

    def _bm25_postings(
        self,
        terms: Sequence[str],
        k: int,
        filters: Mapping[str, str | None],
    ) -> list[tuple[str, float]]:
        """:meth:`bm25_top`'s ranking from the postings of ``terms`` (a few hundred rows).

        FTS5's ``bm25()`` scores each matching row through its auxiliary-function API (a
        row-size read each) and sorts them; here the rows and term frequencies come from the
        ``fts5vocab`` instance table (rowid order), the row sizes from :class:`_DocSizes`, and
        the score is FTS5's expression evaluated in the same order on the same doubles, so
        equal rows get equal scores and the top ``k`` are the same rows. The scope is checked
        down the ranking until ``k`` rows pass. The reads share one snapshot (called outside a
        write only). Every statistic is FTS5's own: the row count and token total from its
        averages record, each term's row count from the ``fts5vocab`` row table, the row sizes
        from ``fts_docsize`` (the library's own counters tokenise like FTS5 only on plain
        words, not on every script). When the terms occur more than :data:`POSTINGS_MAX` times,
        FTS5's ``bm25()`` ranks them instead (faster there).
        """
        with self.snapshot():
            df: dict[str, int] = {}
            occurrences = 0
            for t in terms:
                row = self.conn.execute(f"SELECT doc, cnt FROM temp.{_TERMS} WHERE term = ?", (t,)).fetchone()
                df[t] = int(row[0]) if row else 0
                occurrences += int(row[1]) if row else 0
            if occurrences > POSTINGS_MAX:
                return self._bm25_fts5(terms, k, filters)
            averages = self.conn.execute("SELECT block FROM fts_data WHERE id = 1").fetchone()
            totals = _varints(averages[0]) if averages and averages[0] else []
            n = totals[0] if totals else 0
            if n <= 0:
                return []
            avgdl = float(sum(totals[1:])) / float(n)  # FTS5: (double)nToken / (double)nRow
            self._sizes.refresh(self.conn)
            docs, cols = [], []
            for j, t in enumerate(terms):
                # one row per occurrence, in rowid order; one string back instead of a row each
                (got,) = self.conn.execute(
                    f"SELECT group_concat(doc) FROM temp.{_POSTINGS} WHERE term = ?", (t,)
                ).fetchone()
                d = np.array(got.split(","), dtype=np.int64) if got else np.zeros(0, dtype=np.int64)
                docs.append(d)
                cols.append(np.full(len(d), j, dtype=np.int64))
            every = np.concatenate(docs)
            if not len(every):
                return []
            rids, inv = np.unique(every, return_inverse=True)
            nt = len(terms)
            freq = (
                np.bincount(inv * nt + np.concatenate(cols), minlength=len(rids) * nt)
                .reshape(len(rids), nt)
                .astype(np.float64)
            )
            size = self._sizes.of(self.conn, rids).astype(np.float64)
            score = np.zeros(len(rids), dtype=np.float64)
            for j, t in enumerate(terms):  # FTS5's fts5Bm25Function (fts5_aux.c), term by term
                idf = math.log((n - df[t] + 0.5) / (df[t] + 0.5))
                if idf <= 0.0:
                    idf = 1e-6
                f = freq[:, j]
                score = score + idf * (
                    (f * (BM25_K1 + 1.0)) / (f + BM25_K1 * (1 - BM25_B + BM25_B * size / avgdl))
                )
            order = np.lexsort((rids, -score))
            out: list[tuple[str, float]] = []
            pos, step = 0, int(k) + 16
            while len(out) < k and pos < len(order):
                chunk = order[pos : pos + step]
                pos += len(chunk)
                ids = self._ids_in_scope(rids[chunk].tolist(), filters)
                for i in chunk.tolist():
                    nid = ids.get(int(rids[i]))
                    if nid is not None:
                        out.append((nid, float(score[i])))
                        if len(out) == k:
                            break
            return out

    def _ids_in_scope(self, rids: list[int], filters: Mapping[str, str | None]) -> dict[int, str]:
        """``{rid: node id}`` of the rows among ``rids`` inside the scope filter.

        The vector cache knows the id and scope of every row it has synced (a row's scope ids
        never change); the rest (rows another process committed since, or every row when
        there is no such cache) are read from ``nodes``.
        """
        want = scope_wanted(filters)
        rid_id = getattr(self.vectors, "rid_to_id", None)
        rid_scope = getattr(self.vectors, "rid_scope", None)
        out: dict[int, str] = {}
        rest: list[int] = []
        if rid_id is None or rid_scope is None:
            rest = rids
        else:
            for r in rids:
                sc = rid_scope.get(r)
                nid = rid_id.get(r) if sc is not None else None
                if nid is None:
                    rest.append(r)
                elif scope_matches(sc, want):
                    out[r] = nid
        for i in range(0, len(rest), 900):
            chunk = rest[i : i + 900]
            q = ",".join("?" * len(chunk))
            for r, nid, *sc in self.conn.execute(
                f"SELECT rid, id, user_id, agent_id, run_id FROM nodes WHERE rid IN ({q})", chunk
            ):
                if scope_matches(sc, want):
                    out[r] = nid
        return out

    def bm25_scores(
        self,
        query: str,
        node_ids: Sequence[str],
        contents: Sequence[str] | None = None,
        stats: tuple[int, float, dict[str, int]] | None = None,
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
        n, avgdl, df = stats if stats is not None else self.lexical_stats(query)
        if not n:
            return out
        idf = {t: max(math.log((n - df[t] + 0.5) / (df[t] + 0.5)), 1e-6) for t in qt if df.get(t)}
        if not idf:
            return out
        find = _TOKEN.findall
        for i, text in enumerate(contents):
            toks = find(text.lower())  # tokens(text)
            hits = [t for t in toks if t in idf]
            if not hits:
                continue
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(toks) / avgdl)
            if len(hits) == 1:
                t = hits[0]
                out[i] = idf[t] * 1 * (BM25_K1 + 1) / (1 + norm)
                continue
            counts: dict[str, int] = {}
            for t in hits:  # in the row's order, as the sum below is
                counts[t] = counts.get(t, 0) + 1
            out[i] = sum(idf[t] * tf * (BM25_K1 + 1) / (tf + norm) for t, tf in counts.items())
        return out


def _varints(buf: bytes) -> list[int]:
    """Every SQLite varint of ``buf``, in order (FTS5's averages record: rows, then tokens per column)."""
    out, i = [], 0
    while i < len(buf):
        v = 0
        for j in range(9):
            b = buf[i + j]
            if j == 8:
                v = (v << 8) | b
                break
            v = (v << 7) | (b & 0x7F)
            if b < 0x80:
                break
        i += j + 1
        out.append(v)
    return out


def _varint(buf: bytes) -> int:
    """An SQLite varint (big-endian 7-bit groups, a set high bit continues; the 9th byte is whole)."""
    v = 0
    for i in range(8):
        v = (v << 7) | (buf[i] & 0x7F)
        if buf[i] < 0x80:
            return v
    return (v << 8) | buf[8]


def is_finite_number(x: object) -> bool:
    """A real number (not a bool) that is finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def store_files(path: Path) -> list[str]:
    """Names of the files in a store directory (for checks)."""
    return sorted(os.listdir(path))
