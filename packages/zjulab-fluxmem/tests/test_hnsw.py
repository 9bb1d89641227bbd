"""The HNSW index of large stores: agreement with exact search, tombstones, rollback, the saved
graph (reuse, replay of other writers' changes, stale or broken files), the in-process switch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import FluxMemConfig, FluxMemory
from zjulab.fluxmem.errors import FluxMemConfigError
from zjulab.fluxmem.nodes import MemoryNode, new_id
from zjulab.fluxmem.store import _HNSW, DB_NAME, HNSW_NAME, VectorCache

WORDS = [f"w{i}" for i in range(400)]


def texts(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, 8)) for _ in range(n)]


def cfg(**kw) -> FluxMemConfig:
    base = dict(max_links=0, link_adjacent=False, hnsw_min_nodes=300, hnsw_ef_search=16)
    base.update(kw)
    return FluxMemConfig(**base)


def exact_top(mem: FluxMemory, q: np.ndarray, k: int, users: set[str] | None = None) -> list[str]:
    """The exact top-k by cosine, computed here from the database's vectors."""
    return [n for n, _ in exact_scored(mem, q, k, users)]


def exact_scored(mem, q, k, users=None) -> list[tuple[str, float]]:
    rows = mem.store.conn.execute("SELECT id, vec, user_id FROM nodes").fetchall()
    rows = [r for r in rows if users is None or r[2] in users]
    mat = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    sims = mat @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return [(rows[i][0], float(sims[i])) for i in order]


def same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    """Equal scores rank by rank (ties may come in any order)."""
    return [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


@pytest.fixture()
def enc():
    return HashingEncoder(64)


@pytest.fixture()
def graph_walk(monkeypatch):
    """Every search walks the graph (no exact scan of small or filtered sets)."""
    monkeypatch.setattr(_HNSW, "scan_exactly", lambda self, members: False)


def test_config_validates_hnsw_settings():
    for bad in (
        dict(hnsw_min_nodes=0),
        dict(hnsw_m=1),
        dict(hnsw_ef_search="64"),
        dict(hnsw_ef_construction=True),
    ):
        with pytest.raises(FluxMemConfigError):
            FluxMemConfig(**bad)
    assert FluxMemConfig().hnsw_min_nodes == 20_000


def test_graph_search_with_a_wide_beam_is_the_exact_search(enc, tmp_path, graph_walk):
    rng = np.random.default_rng(0)
    mem = FluxMemory.open(tmp_path / "s", enc, config=cfg(hnsw_ef_search=2000))
    mem.add(texts(rng, 700), user_id="u", infer=False)
    mem.add(texts(rng, 300), user_id="v", infer=False)
    vc = mem.store.vectors
    assert vc.kind == "hnsw" and len(vc) == 1000
    for q in enc.encode(texts(rng, 10)):
        assert same_ranking(vc.search(q, 10, None)[0], exact_scored(mem, q, 10))
        only_v = vc.search_scope(mem.store.conn, q, 10, {"user_id": "v"})[0]
        assert same_ranking(only_v, exact_scored(mem, q, 10, {"v"}))
        assert {n for n, _ in only_v} <= {r["id"] for r in mem.get_all(user_id="v", limit=1000)["results"]}
        assert all(s == pytest.approx(float(vc.vectors([n])[0] @ q), abs=1e-5) for n, s in only_v)
    mem.close()


def test_narrow_graph_search_keeps_most_of_the_exact_top10(enc, tmp_path, graph_walk):
    rng = np.random.default_rng(1)
    mem = FluxMemory.open(tmp_path / "s", enc, config=cfg(hnsw_ef_search=128))
    mem.add(texts(rng, 2000), user_id="u", infer=False)
    shared = []  # share of the graph's top 10 that belongs to the exact top 10 (ties counted in)
    for q in enc.encode(texts(rng, 30)):
        tenth = exact_scored(mem, q, 10)[-1][1]
        shared.append(sum(s >= tenth - 1e-6 for _, s in mem.store.vectors.search(q, 10, None)[0]) / 10)
    assert np.mean(shared) >= 0.9
    mem.close()


def test_deleted_and_updated_memories_leave_tombstones_that_search_never_returns(enc, tmp_path, graph_walk):
    rng = np.random.default_rng(2)
    mem = FluxMemory.open(tmp_path / "s", enc, config=cfg(hnsw_ef_search=2000))
    ids = [r["id"] for r in mem.add(texts(rng, 500), user_id="u", infer=False)["results"]]
    target = "zebra quokka axolotl narwhal"
    doomed = mem.add(target, user_id="u", infer=False)["results"][0]["id"]
    qv = enc.encode([target])[0]
    assert mem.store.vectors.search(qv, 1, None)[0][0][0] == doomed
    mem.delete(doomed)
    assert doomed not in {n for n, _ in mem.store.vectors.search(qv, 50, None)[0]}
    mem.update(ids[0], target)  # the old vector's label becomes a tombstone, the new one is live
    g = mem.store.vectors._index
    assert (g.n, g.live) == (502, 500)
    hits = mem.store.vectors.search(qv, 3, None)[0]
    assert hits[0][0] == ids[0] and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len({n for n, _ in mem.store.vectors.search(qv, 500, None)[0]}) == 500
    mem.close()


def test_a_rolled_back_write_is_undone_in_the_graph_without_a_rebuild(enc, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    mem = FluxMemory.open(tmp_path / "s", enc, config=cfg())
    ids = [r["id"] for r in mem.add(texts(rng, 400), user_id="u", infer=False)["results"]]
    vc = mem.store.vectors
    before = (vc._index.n, vc._index.live, dict(vc.rid_to_id))
    rebuilt = []
    monkeypatch.setattr(VectorCache, "_rebuild", lambda self, conn: rebuilt.append(1))
    with pytest.raises(RuntimeError, match="boom"):
        with mem.store.write():
            mem.store.delete_node(ids[0])
            mem.store.set_content(ids[1], "new words here", enc.encode(["new words here"])[0], "t")
            mem.store.insert_node(
                MemoryNode(id=new_id(), kind="episodic", content="extra", user_id="u"),
                enc.encode(["extra"])[0],
                "{}",
            )
            raise RuntimeError("boom")
    g = vc._index
    assert not rebuilt
    assert g.live == before[1] and g.n == before[0] + 2  # two labels written, both tombstones now
    assert dict(vc.rid_to_id) == before[2]
    q = enc.encode([mem.graph.node(ids[1]).content])[0]
    assert vc.search(q, 1, None)[0][0][0] == ids[1]
    assert vc.vectors([ids[1]])[0] == pytest.approx(
        np.frombuffer(
            mem.store.conn.execute("SELECT vec FROM nodes WHERE id = ?", (ids[1],)).fetchone()[0],
            dtype=np.float32,
        )
    )
    mem.close()


def test_growing_store_switches_in_process_and_saves_the_graph(enc, tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "s"
    mem = FluxMemory.open(path, enc, config=cfg())
    mem.add(texts(rng, 299), user_id="u", infer=False)
    assert mem.store.vectors.kind == "exact" and not (path / HNSW_NAME).exists()
    mem.add(texts(rng, 1), user_id="u", infer=False)
    assert mem.store.vectors.kind == "hnsw" and (path / HNSW_NAME).exists()
    mem.close()
    assert set(os.listdir(path)) == {DB_NAME, HNSW_NAME}


def test_reopening_reuses_the_saved_graph_and_it_holds_no_vectors_or_text(enc, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    path = tmp_path / "s"
    mem = FluxMemory.open(path, enc, config=cfg())
    mem.add(texts(rng, 500), user_id="u", infer=False)
    secret = "Sam's bank PIN is 4921"
    sid = mem.add(secret, user_id="u", infer=False)["results"][0]["id"]
    qs = texts(rng, 10)
    before = [[h["id"] for h in mem.search(q, user_id="u")["results"]] for q in qs]
    mem.close()
    raw = (path / HNSW_NAME).read_bytes()
    assert b"4921" not in raw
    assert enc.encode([secret])[0].astype(np.float32).tobytes()[:32] not in raw
    built = []
    original = _HNSW.add_with_ids
    monkeypatch.setattr(
        _HNSW, "add_with_ids", lambda self, v, r: (built.append(len(r)), original(self, v, r))
    )
    again = FluxMemory.open(path, enc)
    assert [[h["id"] for h in again.search(q, user_id="u")["results"]] for q in qs] == before
    assert built == [] and again.store.vectors.kind == "hnsw"  # loaded, not rebuilt
    assert sid in again.store.vectors.id_to_rid
    again.close()


def test_changes_of_another_writer_after_the_save_are_replayed_on_open(enc, tmp_path):
    rng = np.random.default_rng(6)
    path = tmp_path / "s"
    mem = FluxMemory.open(path, enc, config=cfg())
    ids = [r["id"] for r in mem.add(texts(rng, 400), user_id="u", infer=False)["results"]]
    mem.close()
    saved = (path / HNSW_NAME).read_bytes()
    other = FluxMemory.open(path, enc)
    new = other.add("zebra quokka axolotl", user_id="u", infer=False)["results"][0]["id"]
    other.delete(ids[0])
    other.update(ids[1], "narwhal okapi pangolin")
    other.close()
    (path / HNSW_NAME).write_bytes(saved)  # as if the other writer had been killed before saving
    mem = FluxMemory.open(path, enc)
    assert mem.search("zebra quokka axolotl", user_id="u", top_k=1)["results"][0]["id"] == new
    vc = mem.store.vectors
    assert vc.kind == "hnsw" and len(vc) == 400 and vc._index.live == 400
    assert mem.search("narwhal okapi pangolin", user_id="u", top_k=1)["results"][0]["id"] == ids[1]
    assert ids[0] not in vc.id_to_rid
    mem.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other store"])
def test_a_broken_or_foreign_graph_file_is_rebuilt_not_trusted(enc, tmp_path, damage, monkeypatch):
    rng = np.random.default_rng(7)
    path = tmp_path / "s"
    mem = FluxMemory.open(path, enc, config=cfg(hnsw_ef_search=2000))  # exact: rebuilds agree
    mem.add(texts(rng, 400), user_id="u", infer=False)
    qs = texts(rng, 5)
    before = [[h["id"] for h in mem.search(q, user_id="u")["results"]] for q in qs]
    mem.close()
    f = path / HNSW_NAME
    if damage == "garbage":
        f.write_bytes(b"not a graph" * 100)
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[:5000])
    else:
        foreign = FluxMemory.open(tmp_path / "o", enc, config=cfg())
        # fewer memories: its last change-log row (rid 350, add) exists in this store's log too
        foreign.add(texts(np.random.default_rng(99), 350), user_id="u", infer=False)
        foreign.close()
        f.write_bytes((tmp_path / "o" / HNSW_NAME).read_bytes())
    reused = []
    monkeypatch.setattr(_HNSW, "attach_vectors", lambda self, vecs: reused.append(1))
    mem = FluxMemory.open(path, enc)
    assert [[h["id"] for h in mem.search(q, user_id="u")["results"]] for q in qs] == before
    assert reused == []  # the file was not used
    assert len(mem.store.vectors) == 400 and mem.store.vectors._index.n == 400
    mem.close()
    assert f.read_bytes()[:8] == b"ZJFXHNSW"


def test_save_to_another_directory_copies_the_graph_and_drops_a_stale_one(enc, tmp_path):
    rng = np.random.default_rng(8)
    mem = FluxMemory.open(tmp_path / "s", enc, config=cfg())
    mem.add(texts(rng, 400), user_id="u", infer=False)
    mem.save(tmp_path / "copy")
    assert (tmp_path / "copy" / HNSW_NAME).exists()
    q = texts(rng, 1)[0]
    want = [h["id"] for h in mem.search(q, user_id="u")["results"]]
    copy = FluxMemory.open(tmp_path / "copy", enc)
    assert [h["id"] for h in copy.search(q, user_id="u")["results"]] == want
    assert copy.store.vectors.kind == "hnsw"
    copy.close()
    small = FluxMemory.open(tmp_path / "small", enc, config=cfg())
    small.add("one memory", user_id="u")
    small.save(tmp_path / "copy")  # replaces the copy: its graph must not survive
    assert not (tmp_path / "copy" / HNSW_NAME).exists()
    small.close()
    mem.close()


_KILLED_SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from zjulab.common.testing import HashingEncoder
    from zjulab.fluxmem import FluxMemory
    mem = FluxMemory.open(sys.argv[1], HashingEncoder(64))
    rng = np.random.default_rng(int(sys.argv[2]))
    words = [f"w{i}" for i in range(400)]
    print("ready", flush=True)
    while True:
        mem.add([" ".join(rng.choice(words, 8)) for _ in range(50)], user_id="u", infer=False)
        mem.store.vectors.persist(mem.store.conn)
    """
)


def test_kills_during_graph_saves_leave_no_temp_files_and_lose_nothing(enc, tmp_path):
    import random
    import time

    path = tmp_path / "s"
    mem = FluxMemory.open(path, enc, config=cfg())
    mem.add(texts(np.random.default_rng(9), 400), user_id="u", infer=False)
    mem.close()
    rng = random.Random(0)
    for k in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_SAVER, str(path), str(k)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.1, 0.4))
        proc.kill()
        proc.wait()
        proc.stdout.close()
    mem = FluxMemory.open(path, enc)  # removes a killed writer's temp file, replays the log
    mem.search("w1 w2", user_id="u")
    n = mem.store.conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
    assert len(mem.store.vectors) == n == mem.store.vectors._index.live
    mem.close()
    assert set(os.listdir(path)) == {DB_NAME, HNSW_NAME}


def test_a_copy_made_by_save_is_its_own_store_for_the_graph(enc, tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    a = FluxMemory.open(tmp_path / "a", enc, config=cfg())
    a.add(texts(rng, 400), user_id="u", infer=False)
    a.save(tmp_path / "b")
    a.add(texts(rng, 50), user_id="u", infer=False)
    a.close()
    b = FluxMemory.open(tmp_path / "b", enc)
    b.add(texts(rng, 50), user_id="u", infer=False)
    b.close()
    (tmp_path / "b" / HNSW_NAME).write_bytes((tmp_path / "a" / HNSW_NAME).read_bytes())  # diverged twin
    reused = []
    monkeypatch.setattr(_HNSW, "attach_vectors", lambda self, vecs: reused.append(1))
    b = FluxMemory.open(tmp_path / "b", enc)
    b.search("w1 w2", user_id="u")
    assert reused == [] and len(b.store.vectors) == 450
    b.close()


@pytest.mark.parametrize(
    "damage", ['"seq": "abc"', '"seq": null', '"seq": 1e300', "rid 2**40", "rid -5", "a directory"]
)
def test_a_graph_file_with_bad_fields_or_in_the_way_never_breaks_the_store(enc, tmp_path, damage):
    import json
    import struct

    rng = np.random.default_rng(11)
    path = tmp_path / "s"
    mem = FluxMemory.open(path, enc, config=cfg())
    mem.add(texts(rng, 400), user_id="u", infer=False)
    mem.close()
    f = path / HNSW_NAME
    data = f.read_bytes()
    (hlen,) = struct.unpack("<Q", data[8:16])
    head = json.loads(data[16 : 16 + hlen])
    labels = np.frombuffer(data, dtype=np.int64, count=head["labels"], offset=16 + hlen).copy()
    if damage.startswith('"seq"'):
        head["seq"] = json.loads(damage.split(": ")[1])
    elif damage == "rid 2**40":
        labels[3] = 2**40
    elif damage == "rid -5":
        labels[:] = -5
    new_head = json.dumps(head).encode()
    body = data[16 + hlen + 8 * len(labels) :]
    f.write_bytes(data[:8] + struct.pack("<Q", len(new_head)) + new_head + labels.tobytes() + body)
    if damage == "a directory":
        f.unlink()
        f.mkdir()
    mem = FluxMemory.open(path, enc)
    assert len(mem.search("w1 w2", user_id="u")["results"]) == 10
    mem.add("one more", user_id="u", infer=False)
    assert len(mem.store.vectors) == 401
    mem.close()
    again = FluxMemory.open(path, enc)
    assert len(again.get_all(user_id="u", limit=1000)["results"]) == 401
    again.close()


@pytest.mark.parametrize("threshold", [None, 300])
def test_a_commit_by_another_handle_right_after_the_sync_neither_leaks_scopes_nor_crashes(
    enc, tmp_path, threshold
):
    rng = np.random.default_rng(12)
    path = tmp_path / "s"
    writer = FluxMemory.open(path, enc, config=cfg(hnsw_min_nodes=threshold))
    writer.add(texts(rng, 400), user_id="u", infer=False)
    secret = writer.add("SECRET of user v: the vault code is 4711", user_id="v", infer=False)["results"][0][
        "id"
    ]
    reader = FluxMemory.open(path, enc)
    reader.search("warm up", user_id="v")
    vc = reader.store.vectors
    real_sync, fired = vc.sync, []

    def sync_then_other_commit(conn):
        real_sync(conn)
        if not fired:
            fired.append(1)
            writer.add("SECRET of user u too: the vault code is 4711", user_id="u", infer=False)

    vc.sync = sync_then_other_commit
    for _ in range(3):  # the first search races the commit; later ones see it
        res = reader.search("SECRET of user v: the vault code is 4711", user_id="u", top_k=5)["results"]
        assert res and all(r["user_id"] == "u" for r in res)
        dense = vc.search_scope(
            reader.store.conn, enc.encode(["SECRET vault code 4711"]), 5, {"user_id": "u"}
        )[0]
        assert secret not in {n for n, _ in dense}
    assert res[0]["memory"].startswith("SECRET of user u")
    reader.close()
    writer.close()
