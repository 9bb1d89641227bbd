"""The directory store of a :class:`~zjulab.fluxmem.memory.FluxMemory`.

Layout (format version 1)::

    manifest.json        format, version, encoder id and dimension, config, counts, scopes
    nodes.jsonl          one node record per line
    edges.jsonl          one edge record per line
    history.jsonl        every change event
    trajectories.jsonl   feedback trajectories (Stage III input)
    embeddings.npy       float32 [n_nodes, dim], rows in nodes.jsonl order
    faiss/<i>.index      the faiss index of scope i (ids in manifest["scopes"][i]["ids"])

The whole directory is built in a temporary sibling and swapped in by
:func:`zjulab.common.io.atomic_directory`, so a crash or a kill mid-write leaves the previous
commit (or, if the swap itself was cut between its two renames, the previous commit under a
``.NAME.old`` sibling, which :func:`load_into` restores).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zjulab.common.errors import StoreError
from zjulab.common.io import (
    atomic_directory,
    atomic_write_bytes,
    read_json,
    read_jsonl,
    recover_directory,
    write_json,
    write_jsonl,
)
from zjulab.fluxmem.bm25 import BM25Index
from zjulab.fluxmem.config import FluxMemConfig
from zjulab.fluxmem.errors import FluxStoreError, FluxStoreIndexError, FluxStoreVersionError
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode
from zjulab.fluxmem.vector_index import VectorIndex

if TYPE_CHECKING:
    from zjulab.fluxmem.memory import FluxMemory

__all__ = ["FORMAT", "FORMAT_VERSION", "load_into", "save_memory"]

logger = logging.getLogger(__name__)

FORMAT = "zjulab-fluxmem-store"
FORMAT_VERSION = 1


def save_memory(mem: FluxMemory, path: Path) -> None:
    """Write ``mem`` to the directory ``path`` atomically (see the module docstring)."""
    nodes = list(mem.graph.nodes())
    node_rows = [n.to_dict() for n in nodes]
    scope_rows = []
    dim = int(mem.encoder.dim)
    vectors = np.zeros((len(nodes), dim), dtype=np.float32)
    row_of = {n.id: i for i, n in enumerate(nodes)}
    blobs: list[bytes] = []
    for key, sc in mem._scopes.items():
        ids = sc.index.ids()
        if ids:
            vectors[[row_of[i] for i in ids]] = sc.index.vectors(ids)
        blob, id_map = sc.index.to_bytes()
        blobs.append(blob)
        scope_rows.append({"key": key, "ids": id_map})
    history = [e for events in mem._history.values() for e in events]
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "encoder": getattr(mem.encoder, "model_id", type(mem.encoder).__name__),
        "dim": dim,
        "config": mem.config.to_dict(),
        "counts": {"nodes": len(nodes), "edges": mem.graph.num_edges, "history": len(history)},
        "scopes": scope_rows,
        "tails": dict(mem._tails),
    }
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    with atomic_directory(path) as tmp:
        write_jsonl(tmp / "nodes.jsonl", node_rows)
        write_jsonl(tmp / "edges.jsonl", [e.to_dict() for e in mem.graph.edges()])
        write_jsonl(tmp / "history.jsonl", history)
        write_jsonl(tmp / "trajectories.jsonl", mem._trajectories)
        atomic_write_bytes(tmp / "embeddings.npy", buf.getvalue())
        for i, blob in enumerate(blobs):
            atomic_write_bytes(tmp / "faiss" / f"{i}.index", blob)
        write_json(tmp / "manifest.json", manifest)  # written last: its presence marks a full store
    logger.debug("saved %d nodes to %s", len(nodes), path)


def load_into(mem: FluxMemory, path: Path, *, keep_config: bool = False) -> None:
    """Fill an empty ``mem`` from the store at ``path``; a missing store leaves it empty.

    Raises:
        FluxStoreVersionError: Unknown format or version.
        FluxStoreIndexError: Embeddings or faiss indexes disagree with the nodes, or the
            encoder's dimension differs from the stored one.
        FluxStoreError: Any other unreadable or inconsistent file.
    """
    recover_directory(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise FluxStoreError(f"{path} is not a directory")
    try:
        manifest = read_json(path / "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise FluxStoreVersionError(f"{path}/manifest.json is not a {FORMAT} manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise FluxStoreVersionError(
                f"{path}: store format version {manifest.get('version')!r}, this library reads {FORMAT_VERSION}"
            )
        dim = int(manifest["dim"])
        if dim != int(mem.encoder.dim):
            raise FluxStoreIndexError(
                f"{path}: store embeddings are {dim}-d, the encoder gives {mem.encoder.dim}-d"
            )
        if not keep_config:
            mem.config = FluxMemConfig.from_dict(manifest.get("config", {}))
        nodes = [MemoryNode.from_dict(r) for r in read_jsonl(path / "nodes.jsonl")]
        edges = [MemoryEdge.from_dict(r) for r in read_jsonl(path / "edges.jsonl")]
        history = read_jsonl(path / "history.jsonl")
        trajectories = read_jsonl(path / "trajectories.jsonl")
        vectors = np.load(path / "embeddings.npy", allow_pickle=False)
    except (KeyError, TypeError, ValueError) as exc:
        raise FluxStoreError(f"{path}: corrupt store ({exc})") from exc
    except FluxStoreError:
        raise
    except StoreError as exc:
        raise FluxStoreError(str(exc)) from exc
    if vectors.shape != (len(nodes), dim):
        raise FluxStoreIndexError(
            f"{path}/embeddings.npy has shape {vectors.shape}, expected ({len(nodes)}, {dim})"
        )
    for n in nodes:
        mem.graph.add_node(n)
    for e in edges:
        try:
            mem.graph.add_edge(e)
        except (KeyError, ValueError) as exc:
            raise FluxStoreError(f"{path}/edges.jsonl: edge {e.source}->{e.target}: {exc}") from exc
    row_of = {n.id: i for i, n in enumerate(nodes)}
    by_id = {n.id: n for n in nodes}
    from zjulab.fluxmem.memory import _Scope, node_scope

    for i, row in enumerate(manifest.get("scopes", [])):
        key, id_map = row["key"], row["ids"]
        blob_path = path / "faiss" / f"{i}.index"
        try:
            blob = blob_path.read_bytes()
        except OSError as exc:
            raise FluxStoreError(f"{blob_path}: {exc}") from exc
        index = VectorIndex.from_bytes(dim, blob, id_map)
        bm25 = BM25Index(mem.config.bm25_k1, mem.config.bm25_b)
        for nid in id_map:
            node = by_id.get(nid)
            if node is None or node_scope(node) != key:
                raise FluxStoreIndexError(
                    f"{blob_path}: indexes node {nid!r}, which is not a node of scope {key!r}"
                )
            bm25.add(nid, node.content)
        if id_map:
            probe = next(iter(id_map))
            if not np.allclose(index.vector(probe), vectors[row_of[probe]], atol=1e-5):
                raise FluxStoreIndexError(f"{blob_path}: vector of {probe!r} differs from embeddings.npy")
        mem._scopes[key] = _Scope(index, bm25)
    indexed = sum(len(sc.index) for sc in mem._scopes.values())
    if indexed != len(nodes):
        raise FluxStoreIndexError(f"{path}: faiss indexes hold {indexed} nodes, nodes.jsonl {len(nodes)}")
    for ev in history:
        mem._history.setdefault(ev["memory_id"], []).append(ev)
    mem._trajectories = list(trajectories)
    mem._tails = dict(manifest.get("tails", {}))
    logger.info("opened %s: %d nodes, %d edges", path, len(nodes), len(edges))
