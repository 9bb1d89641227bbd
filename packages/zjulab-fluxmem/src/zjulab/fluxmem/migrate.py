"""One-command conversion of format-1 (JSONL + npy + faiss directory) stores to SQLite.

``zjulab-fluxmem migrate OLD NEW`` (or :func:`migrate_jsonl_store`) reads ``manifest.json``,
``nodes.jsonl``, ``edges.jsonl``, ``history.jsonl``, ``trajectories.jsonl`` and
``embeddings.npy`` of ``OLD`` and writes them, in one transaction, into a new store at
``NEW``. The stored vectors are copied (no encoder is needed) and the old encoder name is
recorded, so opening the new store with another encoder is refused like for any store. ``OLD``
is only read; ``NEW`` must not already hold a store. A failed migration leaves no store at
``NEW`` (the transaction is rolled back and the file it created removed).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.errors import StoreError
from zjulab.common.io import read_json, read_jsonl
from zjulab.fluxmem.errors import FluxStoreError, FluxStoreVersionError, MemoryInputError
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode
from zjulab.fluxmem.store import DB_NAME, SQLiteStore
from zjulab.fluxmem.validation import check_text_tree

__all__ = ["migrate_jsonl_store"]

logger = logging.getLogger(__name__)

_OLD_FORMAT = "zjulab-fluxmem-store"


def migrate_jsonl_store(old: str | os.PathLike[str], new: str | os.PathLike[str]) -> dict[str, int]:
    """Convert the format-1 store ``old`` into a SQLite store at ``new``.

    Returns:
        Counts of what was copied: ``nodes``, ``edges``, ``history``, ``trajectories``.

    Raises:
        FluxStoreVersionError: ``old`` is not a format-1 store.
        FluxStoreError: ``old`` is unreadable or inconsistent, or ``new`` already holds a store.
    """
    src, dst = Path(old), Path(new)
    try:
        manifest = read_json(src / "manifest.json")
    except StoreError as exc:
        raise FluxStoreVersionError(f"{src}: no readable format-1 manifest.json ({exc})") from exc
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != _OLD_FORMAT
        or manifest.get("version") != 1
    ):
        raise FluxStoreVersionError(f"{src}/manifest.json is not a format-1 FluxMem store manifest")
    if (dst / DB_NAME).exists():
        raise FluxStoreError(f"{dst} already holds a FluxMem store; choose an empty directory")
    try:
        dim = int(manifest["dim"])
        nodes = [MemoryNode.from_dict(r) for r in _rows(src / "nodes.jsonl")]
        edges = [MemoryEdge.from_dict(r) for r in _rows(src / "edges.jsonl")]
        history = _rows(src / "history.jsonl")
        trajectories = _rows(src / "trajectories.jsonl")
        vectors = np.load(src / "embeddings.npy", allow_pickle=False)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise FluxStoreError(f"{src}: corrupt format-1 store ({exc})") from exc
    except StoreError as exc:
        raise FluxStoreError(str(exc)) from exc
    if vectors.shape != (len(nodes), dim):
        raise FluxStoreError(
            f"{src}/embeddings.npy has shape {vectors.shape}, expected ({len(nodes)}, {dim})"
        )
    created = not dst.exists()
    store = SQLiteStore(dst, dim)
    ok = False
    try:
        with store.write():
            store.set_meta("encoder", manifest.get("encoder") or "unknown")
            store.set_meta("dim", dim)
            if isinstance(manifest.get("config"), dict):
                store.set_meta("config", manifest["config"])
            for node, vec in zip(nodes, vectors.astype(np.float32)):
                store.insert_node(node, vec, json.dumps(node.metadata, allow_nan=False))
            for e in edges:
                store.graph.add_edge(e)
            for ev in history:
                store.conn.execute(
                    "INSERT INTO history (id, memory_id, event, stage, old_memory, new_memory, detail, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ev["id"],
                        ev["memory_id"],
                        ev["event"],
                        ev["stage"],
                        ev.get("old_memory"),
                        ev.get("new_memory"),
                        json.dumps(ev.get("detail") or {}),
                        ev["created_at"],
                    ),
                )
            for t in trajectories:
                store.conn.execute(
                    "INSERT INTO trajectories (id, user_id, agent_id, run_id, query, evidence, retrieved, text, "
                    "success, consolidated, skill_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        t["id"],
                        *_scope_of(t["scope"]),
                        t["query"],
                        json.dumps(t.get("evidence") or []),
                        json.dumps(t.get("retrieved") or []),
                        t["text"],
                        int(bool(t["success"])),
                        int(bool(t.get("consolidated"))),
                        t.get("skill_id"),
                        t["created_at"],
                    ),
                )
            for key, nid in (manifest.get("tails") or {}).items():
                parts = key.split("|")
                user, agent, run = _scope_of(parts[0])
                agent = parts[1] if len(parts) > 1 and parts[1] != "None" else agent
                run = parts[2] if len(parts) > 2 and parts[2] != "None" else run
                store.conn.execute(
                    "INSERT OR REPLACE INTO tails VALUES (?, ?)", (json.dumps([user, agent, run]), nid)
                )
        ok = True
    except (KeyError, TypeError, ValueError) as exc:
        raise FluxStoreError(f"{src}: corrupt format-1 store ({exc})") from exc
    finally:
        store.close()
        if not ok:
            for suffix in ("", "-wal", "-shm"):
                p = dst / (DB_NAME + suffix)
                if p.exists():
                    p.unlink()
            if created and dst.exists() and not any(dst.iterdir()):
                dst.rmdir()
    counts = {
        "nodes": len(nodes),
        "edges": len(edges),
        "history": len(history),
        "trajectories": len(trajectories),
    }
    logger.info("migrated %s -> %s: %s", src, dst, counts)
    return counts


def _rows(path: Path) -> list[Any]:
    """The rows of a JSONL file, each checked for text SQLite cannot store (named by row)."""
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        try:
            check_text_tree(row, f"{path} row {i}")
        except MemoryInputError as exc:
            raise FluxStoreError(str(exc)) from None
    return rows


def _scope_of(key: str) -> tuple[Any, Any, Any]:
    kind, _, value = key.partition(":")
    return (
        value if kind == "user" else None,
        value if kind == "agent" else None,
        value if kind == "run" else None,
    )
