"""The Qdrant vector backend (``FluxMemConfig(vector_backend="qdrant")``), via ``qdrant-client``.

The same code path runs in Qdrant's local mode (``QdrantClient(path=STORE/qdrant)``, or
``":memory:"`` for an in-memory memory) and against a Qdrant server
(``FluxMemConfig(qdrant_url="http://...")``). The SQLite store stays the source of truth: each
point is a node (point id = ``nodes.rid``, payload = its id and scope ids) and the collection is
brought up to date by replaying the store's change log after every commit; the last replayed log
entry is kept in the collection itself (point 0), so a crash between a commit and the upsert is
repaired by the next replay. Vectors written inside a transaction are searched from memory until
it commits, so Qdrant never holds an uncommitted vector. Scope filters are Qdrant payload filters
(keyword indexes on ``user_id``, ``agent_id``, ``run_id``), applied inside the search.
"""

from __future__ import annotations

import logging
import sqlite3
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.deps import require
from zjulab.fluxmem.errors import FluxStoreError
from zjulab.fluxmem.store import SCOPE_FIELDS, _store_id

__all__ = ["QDRANT_DIR", "QDRANT_EXTRA", "QdrantVectors"]

logger = logging.getLogger(__name__)

QDRANT_EXTRA = "pip install 'zjulab-fluxmem[qdrant]'"
#: The local-mode collection's folder inside a store directory.
QDRANT_DIR = "qdrant"
_META = 0  # point id holding the replay position (node rids start at 1)


class QdrantVectors:
    """A Qdrant collection mirroring ``nodes.vec`` (see the module docstring).

    Args:
        dim: Embedding dimension.
        client: A ``qdrant_client.QdrantClient``.
        collection: Collection name (created with dot-product distance if absent).
    """

    def __init__(self, dim: int, client: Any, collection: str) -> None:
        from qdrant_client import models

        self._m = models
        self.dim = dim
        self.client = client
        self.collection = collection
        if not client.collection_exists(collection):
            client.create_collection(
                collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
            )
            with warnings.catch_warnings():  # local mode has no payload indexes and says so
                warnings.simplefilter("ignore")
                for name in (*SCOPE_FIELDS, "id"):
                    client.create_payload_index(
                        collection, name, field_schema=models.PayloadSchemaType.KEYWORD
                    )
        self._pending: dict[int, tuple[str, np.ndarray, tuple[Any, ...]]] = {}
        self.seq, self._stored_store = self._stored_meta()

    @classmethod
    def from_config(cls, config: Any, dim: int, store_path: Path | None) -> QdrantVectors:
        """Open the collection a configuration names (local mode without ``qdrant_url``)."""
        qc = require("qdrant_client", QDRANT_EXTRA, feature="the Qdrant vector backend")
        if config.qdrant_url:
            client = qc.QdrantClient(url=config.qdrant_url)
        elif store_path is not None:
            folder = store_path / QDRANT_DIR
            try:
                client = qc.QdrantClient(path=str(folder))
            except RuntimeError as exc:  # local mode locks its folder for one client
                raise FluxStoreError(
                    f"{folder}: Qdrant's local mode lets one client open a folder, and this one is "
                    f"open in another handle or process ({exc}); close it first, or run a Qdrant "
                    "server and set FluxMemConfig(qdrant_url=...) for several processes"
                ) from exc
        else:
            client = qc.QdrantClient(location=":memory:")
        out = cls(dim, client, config.qdrant_collection)
        out.local = not config.qdrant_url
        return out

    def close(self) -> None:
        """Close the client (releases local mode's directory lock)."""
        self.client.close()

    def _stored_meta(self) -> tuple[int, str | None]:
        """The replay position and the store id kept in the collection (0, None when new)."""
        got = self.client.retrieve(self.collection, [_META], with_payload=True)
        if not got:
            return 0, None
        return int(got[0].payload.get("seq", 0)), got[0].payload.get("store")

    def __len__(self) -> int:
        n = int(self.client.count(self.collection, exact=True).count)
        return n - 1 if self.client.retrieve(self.collection, [_META]) else n

    # ------------------------------------------------------------------ keeping in step

    def sync(self, conn: sqlite3.Connection) -> None:
        """Replay the change log past the stored position (committed changes only)."""
        rows = conn.execute(
            "SELECT seq, rid, op FROM vec_log WHERE seq > ? ORDER BY seq", (self.seq,)
        ).fetchall()
        if not rows:
            return
        final: dict[int, str] = {}
        for _, rid, op in rows:
            final[rid] = op
        adds = [r for r, op in final.items() if op == "add"]
        dels = [r for r, op in final.items() if op == "del"]
        m = self._m
        if dels:
            self.client.delete(self.collection, points_selector=m.PointIdsList(points=dels))
        for i in range(0, len(adds), 512):
            chunk = adds[i : i + 512]
            q = ",".join("?" * len(chunk))
            points = [
                m.PointStruct(
                    id=rid,
                    vector=np.frombuffer(blob, dtype=np.float32).tolist(),
                    payload={"id": nid, "user_id": u, "agent_id": a, "run_id": r},
                )
                for rid, nid, blob, u, a, r in conn.execute(
                    f"SELECT rid, id, vec, user_id, agent_id, run_id FROM nodes WHERE rid IN ({q})", chunk
                )
            ]
            gone = set(chunk) - {p.id for p in points}  # added then deleted later in the log
            if gone:
                self.client.delete(self.collection, points_selector=m.PointIdsList(points=sorted(gone)))
            if points:
                self.client.upsert(self.collection, points=points)
        self.seq = int(rows[-1][0])
        meta_vec = [1.0] + [0.0] * (self.dim - 1)
        self.client.upsert(
            self.collection,
            points=[
                m.PointStruct(id=_META, vector=meta_vec, payload={"seq": self.seq, "store": self.store_id})
            ],
        )

    def committed(self, conn: sqlite3.Connection) -> None:
        """After a commit: push the transaction's changes to Qdrant."""
        self._pending.clear()
        self.sync(conn)

    def discard(self) -> None:
        """After a rollback: forget the transaction's vectors (Qdrant never saw them)."""
        self._pending.clear()

    def invalidate(self) -> None:
        """Rebuild the collection from the database on the next sync."""
        self._pending.clear()
        self.client.delete(self.collection, points_selector=self._m.FilterSelector(filter=self._m.Filter()))
        self.seq = 0

    def put(self, rid: int, node_id: str, vec: np.ndarray, scope: tuple[Any, ...]) -> None:
        """Hold a vector written inside the open transaction (searched from memory until commit)."""
        self._pending[rid] = (node_id, np.asarray(vec, dtype=np.float32).reshape(self.dim), tuple(scope))

    def drop(self, rids: Iterable[int]) -> None:
        """Forget pending vectors (committed deletes reach Qdrant through the log)."""
        for r in rids:
            self._pending.pop(r, None)

    # ------------------------------------------------------------------ reads

    def vectors(self, node_ids: Sequence[str], conn: sqlite3.Connection | None = None) -> np.ndarray:
        """Vectors of ``node_ids`` (pending ones from memory, the rest from the database)."""
        if not node_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        pend = {nid: v for nid, v, _ in self._pending.values()}
        need = [n for n in node_ids if n not in pend]
        got: dict[str, np.ndarray] = {}
        if need:
            assert self._conn is not None
            for i in range(0, len(need), 900):
                chunk = need[i : i + 900]
                q = ",".join("?" * len(chunk))
                for nid, blob in self._conn.execute(f"SELECT id, vec FROM nodes WHERE id IN ({q})", chunk):
                    got[nid] = np.frombuffer(blob, dtype=np.float32)
        return np.stack([pend[n] if n in pend else got[n] for n in node_ids]).astype(np.float32)

    _conn: sqlite3.Connection | None = None
    store_id: str | None = None
    local = True

    def bind(self, conn: sqlite3.Connection) -> None:
        """The database connection to read stored vectors from, and the store it mirrors.

        A collection that mirrors another store (a saved copy holds a new store id; a copy saved
        over a store keeps the old one's ``qdrant`` folder) is never replayed onto: a local one,
        inside this store's own folder, is emptied and rebuilt; a server's is refused.
        """
        self._conn = conn
        self.store_id = _store_id(conn)
        theirs = self._stored_store
        if theirs is not None and self.store_id is not None and theirs != self.store_id:
            if not self.local:
                raise FluxStoreError(
                    f"Qdrant collection {self.collection!r} mirrors another FluxMem store "
                    f"({theirs}), not this one ({self.store_id}); give this store its own "
                    "FluxMemConfig(qdrant_collection=...)"
                )
            logger.info("the local Qdrant collection mirrors another store: rebuilt from this one")
            self.invalidate()

    def search_scope(
        self, conn: sqlite3.Connection, queries: np.ndarray, k: int, filters: Mapping[str, str | None]
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(node id, score)`` per query row inside a scope filter (a payload filter)."""
        m = self._m
        q = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        must = [
            m.FieldCondition(key=f, match=m.MatchValue(value=v)) for f, v in filters.items() if v is not None
        ]
        flt = m.Filter(must=must) if must else None
        pend = [
            (nid, v)
            for nid, v, scope in self._pending.values()
            if all(w is None or w == h for w, h in zip((filters.get(f) for f in SCOPE_FIELDS), scope))
        ]
        out = []
        for row in q:
            hits = self.client.query_points(
                self.collection, query=row.tolist(), query_filter=flt, limit=k
            ).points
            res = [(str(h.payload["id"]), float(h.score)) for h in hits if h.payload and "id" in h.payload]
            res += [(nid, float(v @ row)) for nid, v in pend]
            res.sort(key=lambda t: -t[1])
            out.append(res[:k])
        return out
