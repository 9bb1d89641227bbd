"""Lexical candidates ranked from the FTS5 postings agree with FTS5's own ``bm25()`` ranking."""

from __future__ import annotations

import numpy as np
import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import FluxMemConfig, FluxMemory
from zjulab.fluxmem.store import _varint, tokens

SCOPES = [
    {"user_id": "u0"},
    {"user_id": "u1"},
    {"user_id": "u1", "agent_id": "a1"},
    {"user_id": "u2", "run_id": "r0"},
    {},
]


def _vocab(rng: np.random.Generator) -> list[str]:
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi"]
    return sorted({"".join(rng.choice(syll, size=3)) for _ in range(3000)})


def _text(rng: np.random.Generator, vocab: list[str]) -> str:
    # Zipf words, 2 to 160 of them (so some rows have more than 127 tokens and repeated words)
    n = int(rng.choice([2, 5, 12, 12, 12, 30, 160]))
    ranks = np.minimum(rng.zipf(1.3, size=n) - 1, len(vocab) - 1)
    return " ".join(vocab[r] for r in ranks)


def _build(path, rng, vocab, n=2500) -> FluxMemory:
    enc = HashingEncoder(64)
    mem = FluxMemory.open(path, enc, config=FluxMemConfig(max_links=0, link_adjacent=False))
    for i in range(0, n, 250):
        for u in range(3):
            mem.add(
                [_text(rng, vocab) for _ in range(250 // 3)],
                user_id=f"u{u}",
                agent_id=f"a{i % 2}",
                run_id=f"r{(i // 250) % 3}",
                infer=False,
            )
    mem.config = FluxMemConfig()  # linked adds and searches with the defaults
    for _ in range(20):
        mem.add(_text(rng, vocab), user_id="u1", agent_id="a1")
    ids = [m["id"] for m in mem.get_all(user_id="u1")["results"]]
    for nid in ids[:40]:  # content changes (sizes and terms change) and deletes
        mem.update(nid, _text(rng, vocab))
    for nid in ids[40:60]:
        mem.delete(nid)
    return mem


def _queries(rng: np.random.Generator, vocab: list[str]) -> list[str]:
    out = [_text(rng, vocab) for _ in range(60)]
    out += [" ".join(rng.choice(vocab, size=int(rng.integers(1, 4)))) for _ in range(60)]
    return out


def _both(store, q, scope, k=50):
    stats = store.lexical_stats(q)
    with store.read():
        store._postings = False
        old = store.bm25_top(q, k, scope, 500, stats)
        store._postings = True
        new = store.bm25_top(q, k, scope, 500, stats)
    return old, new


def _agree(old, new):
    assert [n for n, _ in new] == [n for n, _ in old]
    assert [s for _, s in new] == pytest.approx([s for _, s in old], rel=1e-12, abs=0)


def test_varint_by_hand():
    assert _varint(b"\x00") == 0
    assert _varint(b"\x7f") == 127
    assert _varint(b"\x81\x00") == 128
    assert _varint(b"\x82\x2c") == 300  # 2 * 128 + 44
    assert _varint(b"\x81\x80\x00") == 1 << 14


def test_postings_ranking_equals_fts5_bm25_order_by_on_a_realistic_store(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    vocab = _vocab(rng)
    mem = _build(tmp_path / "s", rng, vocab)
    store = mem.store
    sizes = {len(tokens(m["memory"])) for m in mem.get_all(user_id="u0")["results"]}
    assert max(sizes) > 127  # the multi-byte row sizes are exercised
    calls = {"postings": 0}
    real = store._bm25_postings

    def counted(*a, **kw):
        calls["postings"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(store, "_bm25_postings", counted)
    compared = 0
    for q in _queries(rng, vocab):
        for scope in SCOPES:
            old, new = _both(store, q, scope)
            _agree(old, new)
            compared += bool(old)
    assert compared > 400
    assert calls["postings"] >= compared  # the new path ranked them, not FTS5 under another name
    # ties: many rows with one rare term and the same size score the same; the lower rowid wins
    for q in _queries(rng, vocab)[:20]:
        old, new = _both(store, q, {"user_id": "u0"}, k=3)
        _agree(old, new)
    mem.close()


def test_search_results_are_those_of_the_fts5_ranked_path(tmp_path):
    rng = np.random.default_rng(11)
    vocab = _vocab(rng)
    mem = _build(tmp_path / "s", rng, vocab)
    qs = _queries(rng, vocab)
    got = {}
    for flag in (False, True):
        mem.store._postings = flag
        got[flag] = [
            [(h["id"], h["score"]) for h in mem.search(q, user_id=u, top_k=10, with_context=False)["results"]]
            for q in qs
            for u in ("u0", "u1")
        ]
    assert got[True] == got[False]
    assert sum(map(len, got[True])) > 1000
    mem.close()


def test_a_write_by_another_handle_is_seen_by_the_next_search(tmp_path):
    rng = np.random.default_rng(3)
    vocab = _vocab(rng)
    a = _build(tmp_path / "s", rng, vocab, n=1000)
    b = FluxMemory.open(tmp_path / "s", HashingEncoder(64), config=FluxMemConfig())
    rare = "zzqword"  # in no text yet
    q = f"{rare} {vocab[50]}"
    old, new = _both(a.store, q, {"user_id": "u0"})
    _agree(old, new)  # a's row sizes are loaded now
    victims = [m["id"] for m in a.get_all(user_id="u0")["results"][:30]]
    # b changes rows a has seen: sizes change (1 word <-> 160 words), the rare word appears
    for i, nid in enumerate(victims[:20]):
        b.update(nid, rare if i % 2 else " ".join([rare] + [vocab[50]] * 159))
    for nid in victims[20:25]:
        b.delete(nid)
    added = b.add(f"{rare} {rare} short", user_id="u0", infer=False)["results"][0]["id"]
    old, new = _both(a.store, q, {"user_id": "u0"})
    _agree(old, new)
    found = {n for n, _ in new}
    assert added in found and set(victims[1:20:2]) <= found  # the updated rows are found
    assert not found & set(victims[20:25])
    assert a.search(q, user_id="u0", top_k=5, with_context=False)["results"][0]["id"] in {
        added,
        *victims[1:20:2],
    }
    b.close()
    a.close()


def test_changes_inside_a_write_are_ranked_and_a_rollback_leaves_no_stale_size(tmp_path):
    rng = np.random.default_rng(5)
    vocab = _vocab(rng)
    mem = _build(tmp_path / "s", rng, vocab, n=600)
    store = mem.store
    rare = "zzqword"  # in no text yet
    first = mem.get_all(user_id="u0")["results"][0]
    nid = first["id"]
    # the query also holds the rarest word of nid's text: nid ranks before and after the write
    q = rare + " " + min(tokens(first["memory"]), key=lambda t: store.lexical_stats(t)[2][t])
    old, new = _both(store, q, {"user_id": "u0"})  # sizes loaded
    assert nid in {n for n, _ in new}
    with pytest.raises(RuntimeError):
        with store.write():
            store.set_content(nid, rare, np.ones(64, dtype=np.float32) / 8, "now")
            old, new = _both(store, q, {"user_id": "u0"})
            _agree(old, new)
            assert new[0][0] == nid  # one word, the rare one: the best row inside the write
            raise RuntimeError("roll back")
    old, new = _both(store, q, {"user_id": "u0"})
    _agree(old, new)  # nid's size is its old one again, not the one read inside the write
    assert nid in {n for n, _ in new}
    mem.close()


def test_a_non_ascii_term_is_ranked_by_fts5_itself(tmp_path, monkeypatch):
    mem = FluxMemory.open(tmp_path / "s", HashingEncoder(64), config=FluxMemConfig())
    mem.add(["café au lait", "un café noir", "thé vert"], user_id="u", infer=False)

    def boom(*a, **kw):
        raise AssertionError("postings path used for a non-ASCII term")

    monkeypatch.setattr(mem.store, "_bm25_postings", boom)
    with mem.store.read():
        got = mem.store.bm25_top("café", 5, {"user_id": "u"})
    assert len(got) == 2
    mem.close()


def test_a_bulk_change_by_another_handle_reloads_the_row_sizes(tmp_path):
    rng = np.random.default_rng(9)
    vocab = _vocab(rng)
    a = _build(tmp_path / "s", rng, vocab, n=600)
    b = FluxMemory.open(tmp_path / "s", HashingEncoder(64), config=FluxMemConfig(max_links=0))
    q = f"{vocab[40]} {vocab[300]}"
    _agree(*_both(a.store, q, {"user_id": "u0"}))
    seen_seq = a.store._sizes.seq
    victims = [m["id"] for m in a.get_all(user_id="u0")["results"][:10]]
    for nid in victims:  # sizes a holds change: 1 word <-> 160
        b.update(nid, vocab[40] if rng.random() < 0.5 else " ".join([vocab[300]] * 160))
    for _ in range(5):  # more log entries than the cache forgets one by one
        b.add([_text(rng, vocab) + f" {vocab[40]}" for _ in range(1000)], user_id="u0", infer=False)
    _agree(*_both(a.store, q, {"user_id": "u0"}))
    cache = a.store._sizes
    assert cache.seq > seen_seq + 5000 and cache.sizes is not None
    assert int((cache.sizes >= 0).sum()) == len(a.graph)  # every row's size, read in one pass
    b.close()
    a.close()


def _both_paths(store, query: str, k: int, scope):
    """(postings ranking, FTS5 bm25() ranking) of one query, from one handle."""
    with store.read():
        new = store.bm25_top(query, k, scope)
        store._postings = False
        try:
            old = store.bm25_top(query, k, scope)
        finally:
            store._postings = True
    return new, old


def test_postings_agree_with_fts5_on_text_the_library_tokenises_differently(tmp_path):
    """Review finding: with 'İstanbul' or emoji rows the library's own counters differ from
    FTS5's (unicode61), and the postings ranking used them: 'I pizza' ranked another row first."""
    mem = FluxMemory.open(
        tmp_path / "s", HashingEncoder(32), config=FluxMemConfig(max_links=0, link_adjacent=False)
    )
    texts = ["I like it", "pizza tonight", "pizza again", "pizza with olives"]
    texts += ["İstanbul trip"] * 4 + ["ok🙂 fine", "hello🙂world", "cafe\u0301 au lait", "ΟΔΟΣ map"]
    texts += [f"filler note {i}" for i in range(12)]
    ids = [r["id"] for r in mem.add(texts, user_id="u", infer=False)["results"]]
    name = dict(zip(ids, texts))
    for query in ("I pizza", "ok", "fine note", "cafe", "map trip", "i"):
        for k in (1, 2, 5, 30):
            new, old = _both_paths(mem.store, query, k, {"user_id": "u"})
            assert new == old, (query, k, [(name[i], s) for i, s in new], [(name[i], s) for i, s in old])
    new, _ = _both_paths(mem.store, "I pizza", 1, {"user_id": "u"})
    assert name[new[0][0]] == "I like it"  # what plain sqlite3's ORDER BY bm25(fts) gives
    mem.close()


def test_common_terms_are_ranked_by_fts5_itself_with_the_same_result(tmp_path, monkeypatch):
    from zjulab.fluxmem import store as store_mod

    mem = FluxMemory.open(
        tmp_path / "s", HashingEncoder(32), config=FluxMemConfig(max_links=0, link_adjacent=False)
    )
    mem.add([("the " * (i % 40 + 1)) + f"row {i}" for i in range(300)], user_id="u", infer=False)
    calls = []
    real = mem.store._bm25_fts5
    monkeypatch.setattr(mem.store, "_bm25_fts5", lambda *a: calls.append(a) or real(*a))
    new, old = _both_paths(mem.store, "the", 10, {"user_id": "u"})
    assert new == old and len(calls) == 2  # > POSTINGS_MAX occurrences: FTS5 ranked both
    monkeypatch.setattr(store_mod, "POSTINGS_MAX", 10**9)
    calls.clear()
    new, old = _both_paths(mem.store, "the", 10, {"user_id": "u"})
    assert new == old and len(calls) == 1  # the postings path, same rows and floats
    mem.close()


def test_searches_and_updates_in_threads_on_one_handle_never_wedge_it(tmp_path):
    """Review finding: a checkpoint after an update ran beside a search's COMMIT, which then
    failed and left the shared connection inside a transaction (every later write failed)."""
    import threading

    rng = np.random.default_rng(3)
    vocab = _vocab(rng)
    mem = FluxMemory.open(
        tmp_path / "s", HashingEncoder(64), config=FluxMemConfig(max_links=0, link_adjacent=False)
    )
    ids = [
        r["id"] for r in mem.add([_text(rng, vocab) for _ in range(600)], user_id="u", infer=False)["results"]
    ]
    texts = [_text(rng, vocab) for _ in range(150)]
    queries = [" ".join(rng.choice(vocab, size=2)) for _ in range(150)]
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def searcher():
        for q in queries:
            mem.search(q, user_id="u")

    def updater():
        for nid, t in zip(ids, texts):
            mem.update(nid, t)

    threads = [threading.Thread(target=run, args=(searcher,)) for _ in range(3)]
    threads.append(threading.Thread(target=run, args=(updater,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and not mem.store.conn.in_transaction
    assert mem.get(ids[149])["memory"] == texts[149]
    mem.add("still writable afterwards", user_id="u", infer=False)
    mem.close()


def test_two_writer_threads_on_one_handle_update_and_delete_without_errors(tmp_path):
    """Review finding (older than the postings path): two threads updating and deleting through
    one handle (what AsyncFluxMemory and the server's thread pool do) raised 'cannot start a
    transaction within a transaction' after a checkpoint met a COMMIT."""
    import threading

    mem = FluxMemory.open(
        tmp_path / "s", HashingEncoder(32), config=FluxMemConfig(max_links=0, link_adjacent=False)
    )
    ids = [
        r["id"]
        for r in mem.add(
            [f"note number {i} about item {i % 7}" for i in range(400)], user_id="u", infer=False
        )["results"]
    ]
    errors: list[BaseException] = []

    def work(part):
        try:
            for j, nid in enumerate(part):
                if j % 2:
                    mem.delete(nid)
                else:
                    mem.update(nid, f"changed {nid}")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and not mem.store.conn.in_transaction
    assert len(mem.get_all(user_id="u", limit=1000)["results"]) == 200
    mem.close()
