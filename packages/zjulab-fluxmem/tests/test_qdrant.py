"""The Qdrant backend (local mode): same answers as faiss, scopes in the query, replay after a crash."""

from __future__ import annotations

import pytest

from zjulab.fluxmem import FluxMemConfig, FluxMemory

pytest.importorskip("qdrant_client")

TEXTS = [
    ("Ana moved to Lisbon in May", "ana", "a1", "r1"),
    ("Ana works at a bakery in Lisbon", "ana", "a2", "r1"),
    ("Ana has a cat called Miso", "ana", "a1", "r2"),
    ("Bob plays chess in Porto", "bob", "a1", "r1"),
    ("Bob moved to Porto for a bakery job", "bob", "a2", "r2"),
]
QUERIES = ["Where did Ana move?", "bakery", "Porto chess", "cat Miso"]
SCOPES = [
    {"user_id": "ana"},
    {"user_id": "bob"},
    {"agent_id": "a1"},
    {"run_id": "r1"},
    {"user_id": "ana", "run_id": "r2"},
]


def fill(mem: FluxMemory) -> None:
    for text, u, a, r in TEXTS:
        mem.add(text, user_id=u, agent_id=a, run_id=r)


def ranking(mem: FluxMemory) -> list:
    # ties are broken by node id, which differs between two memories: compare as sorted pairs
    return [
        sorted(
            ((h["memory"], round(h["score"], 5)) for h in mem.search(q, top_k=5, **s)["results"]),
            key=lambda t: (-t[1], t[0]),
        )
        for q in QUERIES
        for s in SCOPES
    ]


def test_qdrant_local_mode_agrees_with_faiss(enc, tmp_path):
    faiss_mem = FluxMemory(enc)
    q_mem = FluxMemory.open(tmp_path / "q", enc, config=FluxMemConfig(vector_backend="qdrant"))
    fill(faiss_mem)
    fill(q_mem)
    assert ranking(q_mem) == ranking(faiss_mem)
    assert len(q_mem.store.vectors) == len(TEXTS)
    bob = [r["id"] for r in q_mem.get_all(user_id="bob")["results"]]
    q_mem.delete(bob[0])
    faiss_mem.delete(faiss_mem.get_all(user_id="bob")["results"][0]["id"])
    assert ranking(q_mem) == ranking(faiss_mem)
    q_mem.close()
    back = FluxMemory.open(tmp_path / "q", enc)  # the backend is part of the stored config
    assert back.config.vector_backend == "qdrant"
    assert ranking(back) == ranking(faiss_mem)
    back.close()


def test_qdrant_never_holds_a_rolled_back_vector_and_replays_after_a_crash(enc, tmp_path, monkeypatch):
    mem = FluxMemory.open(tmp_path / "q", enc, config=FluxMemConfig(vector_backend="qdrant"))
    fill(mem)

    def boom(*a, **k):
        raise RuntimeError("cut")

    monkeypatch.setattr(mem, "_form_connections", boom)
    with pytest.raises(RuntimeError):
        mem.add("phantom zebra", user_id="ana")
    monkeypatch.undo()
    assert len(mem.store.vectors) == len(TEXTS)
    assert all("zebra" not in h["memory"] for h in mem.search("zebra", user_id="ana")["results"])
    # a crash between a commit and the upsert: the collection lags behind the log
    monkeypatch.setattr(type(mem.store.vectors), "committed", lambda self, conn: self._pending.clear())
    mem.add("Ana adopted a dog named Rex", user_id="ana")
    monkeypatch.undo()
    mem.store.vectors.close()
    mem.store.conn.close()
    back = FluxMemory.open(tmp_path / "q", enc)
    assert (
        back.search("dog Rex", user_id="ana", top_k=1)["results"][0]["memory"]
        == "Ana adopted a dog named Rex"
    )
    assert len(back.store.vectors) == len(TEXTS) + 1
    back.close()


def test_a_second_local_qdrant_handle_is_a_typed_error(enc, tmp_path):
    from zjulab.fluxmem import FluxStoreError

    mem = FluxMemory.open(tmp_path / "q", enc, config=FluxMemConfig(vector_backend="qdrant"))
    fill(mem)
    with pytest.raises(FluxStoreError, match="local mode lets one client open a folder"):
        FluxMemory.open(tmp_path / "q", enc)
    mem.close()
    with FluxMemory.open(tmp_path / "q", enc) as back:  # the first handle closed: it opens
        assert len(back.store.vectors) == len(TEXTS)


def test_a_store_saved_over_a_qdrant_copy_gets_its_collection_rebuilt(enc, tmp_path):
    # the copy's folder keeps the local collection of what it held before; the collection names
    # the store it mirrors, so the content saved over it is never searched through the old one
    cfg = FluxMemConfig(vector_backend="qdrant")
    first = FluxMemory.open(tmp_path / "first", enc, config=cfg)
    fill(first)
    first.save(tmp_path / "copy")
    with FluxMemory.open(tmp_path / "copy", enc) as copy:  # creates copy/qdrant
        assert ranking(copy) == ranking(first)
    second = FluxMemory.open(tmp_path / "second", enc, config=cfg)
    second.add("Cleo repairs old boats in Faro", user_id="ana", agent_id="a1", run_id="r1")
    second.save(tmp_path / "copy")  # the qdrant folder is the copy's own: accepted
    with FluxMemory.open(tmp_path / "copy", enc) as copy:
        assert len(copy.store.vectors) == 1
        hits = copy.search("Lisbon bakery boats", user_id="ana")["results"]
        assert [h["memory"] for h in hits] == ["Cleo repairs old boats in Faro"]
    first.close()
    second.close()
