"""Persistence: lossless round trip, versioning, typed errors and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zjulab.common.errors import SchemaVersionError, StoreError
from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import (
    FluxMemConfig,
    FluxMemory,
    FluxStoreError,
    FluxStoreIndexError,
    FluxStoreVersionError,
    MemoryInputError,
)


def build(enc, path=None) -> FluxMemory:
    mem = FluxMemory(
        enc, config=FluxMemConfig(bm25_weight=0.7, link_min_cosine=0.1), path=path, autosave=False
    )
    mem.add(["Ana moved to Lisbon", "Ana works at a bakery in Lisbon", "Ana has a cat"], user_id="ana")
    mem.add("Bob plays chess in Porto", user_id="bob", run_id="r1")
    a = mem.get_all(user_id="ana")["results"][0]["id"]
    mem.update(a, "Ana moved to Lisbon in May")
    mem.feedback("Where does Ana live?", "success", [a], user_id="ana")
    mem.consolidate(user_id="ana")
    return mem


def snapshot(mem: FluxMemory) -> dict:
    return {
        "nodes": sorted((n.to_dict() for n in mem.graph.nodes()), key=lambda d: d["id"]),
        "edges": sorted((e.source, e.target, e.kind, e.weight, e.stage) for e in mem.graph.edges()),
        "history": {k: v for k, v in mem._history.items()},
        "traj": mem._trajectories,
        "search": mem.search("Where does Ana live and work?", user_id="ana"),
        "config": mem.config,
    }


def test_round_trip_is_lossless(enc, tmp_path):
    mem = build(enc)
    mem.save(tmp_path / "store")
    assert (tmp_path / "store" / "manifest.json").exists()
    back = FluxMemory.open(tmp_path / "store", enc)
    assert snapshot(back) == snapshot(mem)
    # the reopened store keeps working: new writes link and index like before
    back.add("Ana also likes trams in Lisbon", user_id="ana")
    assert (
        back.search("trams", user_id="ana", top_k=1)["results"][0]["memory"]
        == "Ana also likes trams in Lisbon"
    )


def test_autosave_commits_every_change(enc, tmp_path):
    path = tmp_path / "auto"
    mem = FluxMemory.open(path, enc)
    assert not path.exists()
    rid = mem.add("first", user_id="u")["results"][0]["id"]
    assert len(FluxMemory.open(path, enc).get_all(user_id="u")["results"]) == 1
    mem.delete(rid)
    assert FluxMemory.open(path, enc).get_all(user_id="u")["results"] == []
    with pytest.raises(MemoryInputError, match="needs a path"):
        FluxMemory(enc).save()


def test_version_and_dimension_errors(enc, tmp_path):
    path = build(enc).save(tmp_path / "s")
    with pytest.raises(FluxStoreIndexError, match="256-d"):
        FluxMemory.open(path, HashingEncoder(128))
    man = json.loads((path / "manifest.json").read_text())
    man["version"] = 99
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(FluxStoreVersionError, match="version 99") as info:
        FluxMemory.open(path, enc)
    assert isinstance(info.value, SchemaVersionError)


def test_corrupt_files_raise_typed_errors(enc, tmp_path):
    path = build(enc).save(tmp_path / "s")
    lines = (path / "nodes.jsonl").read_text().splitlines()
    (path / "nodes.jsonl").write_text("\n".join([lines[0], "{broken", *lines[2:]]) + "\n")
    with pytest.raises(FluxStoreError, match=r"nodes.jsonl:2") as info:
        FluxMemory.open(path, enc)
    assert isinstance(info.value, StoreError)
    path2 = build(enc).save(tmp_path / "s2")
    (path2 / "faiss" / "0.index").write_bytes((path2 / "faiss" / "1.index").read_bytes())
    with pytest.raises(FluxStoreIndexError):
        FluxMemory.open(path2, enc)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FluxStoreError, match="not a directory"):
        FluxMemory.open(tmp_path / "file", enc)


def test_exception_mid_write_keeps_last_commit(enc, tmp_path, monkeypatch):
    path = tmp_path / "s"
    mem = build(enc, path)
    mem.save()
    before = snapshot(FluxMemory.open(path, enc))
    mem.add("this write will not be committed", user_id="ana")
    import zjulab.fluxmem.store as store

    real = store.write_jsonl

    def failing(p, rows):
        if Path(p).name == "edges.jsonl":
            raise OSError("disk full")
        return real(p, rows)

    monkeypatch.setattr(store, "write_jsonl", failing)
    with pytest.raises(OSError, match="disk full"):
        mem.save()
    monkeypatch.undo()
    assert snapshot(FluxMemory.open(path, enc)) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]  # temp dir cleaned


def test_interrupted_swap_is_recovered(enc, tmp_path):
    path = build(enc).save(tmp_path / "s")
    n = len(FluxMemory.open(path, enc).graph)
    os.replace(path, tmp_path / ".s.old")  # a kill between the two renames of the swap
    assert len(FluxMemory.open(path, enc).graph) == n
    assert path.exists()


_WRITER = textwrap.dedent(
    """
    import sys
    from zjulab.common.testing import HashingEncoder
    from zjulab.fluxmem import FluxMemory, FluxMemConfig
    mem = FluxMemory.open(sys.argv[1], HashingEncoder(256), config=FluxMemConfig(max_links=1))
    i = len(mem.graph)
    while True:
        mem.add([f"note {i} about topic {i % 7}", f"more words {i} {i * 3}"], user_id="u")
        i += 2
        print(i, flush=True)
    """
)


def test_sigkill_mid_write_leaves_loadable_store(enc, tmp_path):
    path = tmp_path / "killed"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    committed = 0
    for delay in (0.6, 0.9, 1.3):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, env=env, text=True
        )
        first = proc.stdout.readline()  # at least one commit of this process happened
        assert first.strip()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        mem = FluxMemory.open(path, enc)
        n = len(mem.graph)
        assert n >= committed + 2 and n % 2 == 0  # whole add() calls only, nothing lost
        assert len(mem._scopes["user:u"].index) == n
        committed = n
