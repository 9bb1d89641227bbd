"""Stage I formation, search, scoping, CRUD, history and malformed chat output."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.fluxmem import (
    AsyncFluxMemory,
    FluxMemConfig,
    FluxMemory,
    MemoryInputError,
    MemoryNotFoundError,
    ScopeError,
    scope_key,
)


def edges(mem: FluxMemory) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in mem.graph.edges()}


def test_add_writes_episodes_with_speaker_time_and_next_links(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0))
    res = mem.add(
        [
            {"role": "user", "name": "Ana", "content": "I moved to Lisbon", "timestamp": "May 2023"},
            {"role": "assistant", "content": "Nice city"},
        ],
        user_id="ana",
        metadata={"src": "chat"},
    )
    a, b = (r["id"] for r in res["results"])
    assert [r["memory"] for r in res["results"]] == ["Ana: I moved to Lisbon", "Nice city"]
    na = mem.get(a)
    assert (na["speaker"], na["timestamp"], na["metadata"]) == ("Ana", "May 2023", {"src": "chat"})
    assert mem.get(b)["speaker"] == "assistant"
    c = mem.add("Third message", user_id="ana")["results"][0]["id"]
    # next links chain within the call and across calls of the same scope and run
    assert edges(mem) == {(a, b, "next"), (b, c, "next")}
    d = mem.add("Other run", user_id="ana", run_id="r2")["results"][0]["id"]
    assert not any(d in e[:2] for e in edges(mem))


def test_formation_links_best_hybrid_candidates(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(link_adjacent=False, max_links=1))
    a = mem.add("alpha beta gamma delta", user_id="u")["results"][0]["id"]
    c = mem.add("zeta eta theta iota", user_id="u")["results"][0]["id"]
    b = mem.add("alpha beta gamma epsilon", user_id="u")["results"][0]["id"]
    assert edges(mem) == {(b, a, "associate")}
    e = mem.graph.find_edge(b, a, "associate")
    va, vb = mem.store.vectors.vectors([a, b])
    cos = float(va @ vb)
    assert e.weight == pytest.approx(cos) and e.stage == "formation"
    assert c not in {x for ed in edges(mem) for x in ed[:2]}


def test_formation_verification_rejects_links(enc):
    # one candidate list per new unit: the verifier accepts the first and rejects the second
    chat = ScriptedChatModel(['{"scores": [0.9, 0.1]}'])
    cfg = FluxMemConfig(link_adjacent=False, max_links=3, extract_facts=False, link_min_cosine=0.05)
    mem = FluxMemory(enc, config=cfg)
    a = mem.add("alpha beta gamma delta", user_id="u")["results"][0]["id"]
    b = mem.add("alpha beta kappa lambda", user_id="u")["results"][0]["id"]
    mem.graph.remove_edge(b, a, "associate")
    mem.chat_model = chat
    mem.reasoner.chat_model = chat
    c = mem.add("alpha beta gamma delta kappa", user_id="u")["results"][0]["id"]
    prompt = chat.calls[0][1]["content"]
    by_text = {"alpha beta gamma delta": a, "alpha beta kappa lambda": b}
    listed = [line[4:] for line in prompt.splitlines() if line.startswith(("[0] ", "[1] "))]
    first, other = by_text[listed[0]], by_text[listed[1]]
    assert (c, first, "associate") in edges(mem)
    assert (c, other, "associate") not in edges(mem)


def test_malformed_verification_degrades_to_hybrid_links(enc):
    cfg = FluxMemConfig(link_adjacent=False, max_links=1, extract_facts=False)
    plain = FluxMemory(enc, config=cfg)
    broken = FluxMemory(enc, ScriptedChatModel(default="I think they are related!"), cfg)
    for m in (plain, broken):
        m.add("alpha beta gamma delta", user_id="u")
        m.add("alpha beta gamma epsilon", user_id="u")

    def kinds(m):
        return sorted(
            (m.graph.node(e.source).content, m.graph.node(e.target).content) for e in m.graph.edges()
        )

    assert kinds(plain) == kinds(broken) == [("alpha beta gamma epsilon", "alpha beta gamma delta")]
    assert broken.reasoner.failures == 1


def test_fact_extraction_grounds_facts(enc):
    chat = ScriptedChatModel(
        ['{"facts": [{"text": "Ana lives in Lisbon", "sources": [0]}, {"text": "<string>", "sources": [1]}]}']
    )
    mem = FluxMemory(enc, chat, FluxMemConfig(max_links=0, verify_links=False))
    res = mem.add(["Ana: I moved to Lisbon", "Ana: I like trams"], user_id="ana")
    kinds = [r["kind"] for r in res["results"]]
    assert kinds == ["episodic", "episodic", "semantic"]  # the placeholder fact is dropped
    e0, e1, f = (r["id"] for r in res["results"])
    assert edges(mem) == {(e0, e1, "next"), (f, e0, "ground"), (e0, f, "distill")}
    hit = mem.search("Where does Ana live?", user_id="ana", top_k=3)["results"]
    fact = next(h for h in hit if h["kind"] == "semantic")
    assert {"id": e0, "memory": "Ana: I moved to Lisbon", "kind": "episodic", "relation": "ground"} in fact[
        "context"
    ]


@pytest.mark.parametrize("reply", ["", "no facts here", '{"facts": "oops"', '{"wrong": 1}', "[1, 2"])
def test_malformed_fact_output_never_loses_the_write(enc, reply):
    mem = FluxMemory(enc, ScriptedChatModel(default=reply), FluxMemConfig(verify_links=False))
    res = mem.add(["Ana: I moved to Lisbon", "Ana: I like trams"], user_id="ana")
    assert [r["kind"] for r in res["results"]] == ["episodic", "episodic"]
    assert len(mem.get_all(user_id="ana")["results"]) == 2


def test_chat_model_exception_degrades(enc):
    class Boom:
        model_id = "boom"

        def generate(self, conversations, **kw):
            from zjulab.common.errors import RemoteModelError

            raise RemoteModelError("server down")

    mem = FluxMemory(enc, Boom())
    assert len(mem.add("Ana: hello there", user_id="ana")["results"]) == 1


def test_scoping_is_strict(enc):
    mem = FluxMemory(enc)
    mem.add("My password hint is the blue whale", user_id="alice")
    mem.add("I like whales and the colour blue", user_id="bob")
    mem.add("Agent note about blue whales", agent_id="helper")
    for _ in range(3):
        hits = mem.search("blue whale password", user_id="bob", top_k=10)["results"]
        assert [h["user_id"] for h in hits] == ["bob"]
        for h in hits:
            assert all(c["memory"] != "My password hint is the blue whale" for c in h["context"])
    assert [h["memory"] for h in mem.search("blue whale", agent_id="helper")["results"]] == [
        "Agent note about blue whales"
    ]
    assert mem.search("anything", user_id="nobody")["results"] == []
    assert len(mem.get_all(user_id="alice")["results"]) == 1


def test_scope_errors(enc):
    mem = FluxMemory(enc)
    with pytest.raises(ScopeError, match="one of user_id"):
        mem.add("hi")
    with pytest.raises(ScopeError, match="user_id must be a non-empty string"):
        mem.search("hi", user_id="")
    assert scope_key("u", "a", "r") == "user:u|agent:a|run:r" and scope_key(None, "a", None) == "agent:a"
    assert scope_key(None, None, "r") == "run:r"


@pytest.mark.parametrize("bad", [[], [{"role": "user"}], [{"role": "user", "content": "  "}], [3], 42])
def test_bad_messages(enc, bad):
    with pytest.raises(MemoryInputError, match=r"message|messages"):
        FluxMemory(enc).add(bad, user_id="u")


def test_search_filters_threshold_and_errors(enc):
    mem = FluxMemory(enc)
    mem.add(
        [{"role": "user", "content": "apples are red", "metadata": {"topic": "fruit"}}],
        user_id="u",
        agent_id="a1",
    )
    mem.add(
        [{"role": "user", "content": "apples are green", "metadata": {"topic": "colour"}}],
        user_id="u",
        agent_id="a2",
    )
    got = mem.search("apples", user_id="u", filters={"topic": "fruit"})["results"]
    assert [g["memory"] for g in got] == ["apples are red"]
    got = mem.search("apples", user_id="u", agent_id="a2")["results"]
    assert [g["memory"] for g in got] == ["apples are green"]
    got = mem.search("apples", user_id="u", filters={"topic": ["fruit", "colour"]}, top_k=1)["results"]
    assert len(got) == 1
    assert mem.search("apples", user_id="u", threshold=99.0)["results"] == []
    with pytest.raises(MemoryInputError, match="top_k"):
        mem.search("apples", user_id="u", top_k=0)
    with pytest.raises(MemoryInputError, match="query"):
        mem.search("   ", user_id="u")


def test_crud_and_history(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0))
    a, b = (r["id"] for r in mem.add(["I live in Porto", "I have a cat"], user_id="u")["results"])
    assert mem.update(a, "I live in Lisbon")["memory"] == "I live in Lisbon"
    assert mem.search("Lisbon", user_id="u", top_k=1)["results"][0]["id"] == a
    assert mem.search("Porto", user_id="u")["results"][0]["memory"] != "I live in Porto"
    mem.delete(b)
    with pytest.raises(MemoryNotFoundError, match=b):
        mem.get(b)
    ev = [(h["event"], h["stage"]) for h in mem.history(a)]
    assert ev == [("ADD", "formation"), ("LINK", "formation"), ("UPDATE", "user"), ("UNLINK", "user")]
    upd = mem.history(a)[2]
    assert (upd["old_memory"], upd["new_memory"]) == ("I live in Porto", "I live in Lisbon")
    assert [h["event"] for h in mem.history(b)] == ["ADD", "LINK", "DELETE"]
    with pytest.raises(MemoryNotFoundError):
        mem.history("nope")
    with pytest.raises(MemoryNotFoundError):
        mem.update("nope", "x")
    with pytest.raises(MemoryInputError):
        mem.update(a, "")
    assert mem.delete_all(user_id="u") == 1
    assert mem.get_all(user_id="u")["results"] == []
    mem.add("x", user_id="v")
    mem.reset()
    assert mem.stats()["nodes"] == {} and mem.get_all(user_id="v")["results"] == []


def test_search_propagates_through_links(enc):
    cfg = FluxMemConfig(max_links=0, link_adjacent=False, context_weight=0.5)
    mem = FluxMemory(enc, config=cfg)
    q = mem.add("Did you visit the museum", user_id="u")["results"][0]["id"]
    ans = mem.add("Yes yesterday with Kim", user_id="u")["results"][0]["id"]
    other = mem.add("Yes tomorrow with Bo", user_id="u")["results"][0]["id"]
    before = {h["id"]: h["score"] for h in mem.search("visit the museum", user_id="u")["results"]}
    mem._link(q, ans, "next", 1.0, "formation")
    after = {h["id"]: h["score"] for h in mem.search("visit the museum", user_id="u")["results"]}
    # the answer gains context_weight * base(question) * 1.0; the unlinked turn gains nothing
    assert after[ans] - before[ans] == pytest.approx(0.5 * before[q], abs=1e-6)
    assert after[other] == pytest.approx(before[other])


def test_async_variant(enc):
    async def run():
        amem = AsyncFluxMemory.create(enc)
        await asyncio.gather(*(amem.add(f"note number {i} about tea", user_id="u") for i in range(5)))
        hits = await amem.search("tea note", user_id="u", top_k=10)
        rid = hits["results"][0]["id"]
        await amem.update(rid, "changed note")
        hist = await amem.history(rid)
        return len(hits["results"]), [h["event"] for h in hist][-1]

    n, last = asyncio.run(run())
    assert (n, last) == (5, "UPDATE")


def test_async_store_round_trip(enc, tmp_path):
    async def run():
        amem = await AsyncFluxMemory.open(tmp_path / "s", enc)
        await amem.add("async note about tea", user_id="u")
        await amem.feedback("tea?", "success", user_id="u")
        trajs = await amem.trajectories(user_id="u")
        await amem.close()
        again = await AsyncFluxMemory.open(tmp_path / "s", enc)
        got = await again.get_all(user_id="u")
        await again.close()
        return len(trajs), [r["memory"] for r in got["results"]]

    assert asyncio.run(run()) == (1, ["async note about tea"])


def test_from_pretrained_names_a_missing_model():
    import os

    from zjulab.common.errors import ConfigError, ModelNotAvailableError

    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1 so that the hub is never asked")

    import importlib.util

    from zjulab.common.errors import MissingDependencyError

    if importlib.util.find_spec("torch") is None:  # the lean install: the error names the extra
        with pytest.raises(MissingDependencyError, match=r"pip install 'zjulab-fluxmem\[torch\]'"):
            FluxMemory.from_pretrained("zjulab-test/no-such-encoder", device="cpu")
        return
    with pytest.raises(
        (ModelNotAvailableError, ConfigError), match=r"zjulab-test/no-such-encoder|sentence-transformers"
    ):
        FluxMemory.from_pretrained("zjulab-test/no-such-encoder", device="cpu")


def test_fact_sources_are_repaired_or_the_fact_dropped(enc):
    reply = (
        '{"facts": [{"text": "Ana likes trams", "sources": [0]},'
        ' {"text": "Ana owns a yacht in Monaco", "sources": [1]}]}'
    )
    mem = FluxMemory(enc, ScriptedChatModel([reply]), FluxMemConfig(max_links=0, verify_links=False))
    _e0, e1, fact = (
        r["id"] for r in mem.add(["Ana: I moved to Lisbon", "Ana: I like trams"], user_id="ana")["results"]
    )
    assert mem.get(fact)["memory"] == "Ana likes trams"
    # the model cited message 0; the words are in message 1, so the fact is grounded there
    assert {(e.source, e.target, e.kind) for e in mem.graph.edges() if e.kind == "ground"} == {
        (fact, e1, "ground")
    }
    assert len(mem.get_all(user_id="ana")["results"]) == 3  # the unsupported yacht fact is dropped


def test_update_merges_metadata_like_mem0_and_checks_it_first(enc, tmp_path):
    mem = FluxMemory.open(tmp_path / "s", enc)
    mid = mem.add("I like tea", user_id="u", metadata={"a": 1, "b": 2})["results"][0]["id"]
    out = mem.update(mid, metadata={"b": 3, "c": "x"})
    assert out["message"] == "Memory updated successfully!"  # Mem0's Memory.update return value
    assert (out["memory"], out["metadata"]) == ("I like tea", {"a": 1, "b": 3, "c": "x"})
    mem.update(mid, text="I like green tea", metadata={"a": None})
    for bad in ({"when": date(2024, 3, 2)}, {"derived": "fact"}, {"sources": ["x"]}):
        with pytest.raises(MemoryInputError):
            mem.update(mid, "changed", metadata=bad)
    with pytest.raises(MemoryInputError, match="needs new content"):
        mem.update(mid)
    with pytest.raises(MemoryInputError, match="different values"):
        mem.update(mid, "one", text="two")
    mem.close()
    got = FluxMemory.open(tmp_path / "s", enc).get(mid)
    assert (got["memory"], got["metadata"]) == ("I like green tea", {"a": None, "b": 3, "c": "x"})


def test_metadata_only_update_keeps_what_was_derived(enc):
    chat = ScriptedChatModel(default='{"facts": [{"text": "Ana lives in Lisbon", "sources": [0]}]}')
    mem = FluxMemory(enc, chat, FluxMemConfig(max_links=0, verify_links=False))
    ep, fact = (r["id"] for r in mem.add("Ana: I moved to Lisbon", user_id="ana")["results"])
    mem.update(ep, metadata={"checked": True})
    assert mem.get(fact)["memory"] == "Ana lives in Lisbon"  # the text did not change
    mem.update(ep, "Ana: I moved to Porto")
    with pytest.raises(MemoryNotFoundError):
        mem.get(fact)


def test_reserved_metadata_keys_are_refused_on_add(enc):
    mem = FluxMemory(enc)
    for meta in ({"derived": "split"}, {"sources": ["abc"]}):
        with pytest.raises(MemoryInputError, match="reserved"):
            mem.add("x", user_id="u", metadata=meta)
        with pytest.raises(MemoryInputError, match=r"messages\[0\].metadata"):
            mem.add([{"role": "user", "content": "x", "metadata": meta}], user_id="u")
    assert mem.get_all(user_id="u")["results"] == []


def test_filters_take_mem0s_operators_and_refuse_what_they_cannot_do(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0))
    for text, meta in (
        ("tea at noon", {"n": 1, "tag": "Drink"}),
        ("tea at two", {"n": 2, "tag": "drinks"}),
        ("tea at three", {"n": 3}),
    ):
        mem.add(text, user_id="u", metadata=meta)

    def found(flt):
        return sorted(h["memory"] for h in mem.search("tea", user_id="u", filters=flt)["results"])

    assert found({"n": {"gte": 2}}) == ["tea at three", "tea at two"]
    assert found({"n": {"gt": 1, "lt": 3}}) == ["tea at two"]
    assert found({"n": {"ne": 2}}) == ["tea at noon", "tea at three"]
    assert found({"n": {"in": [1, 3]}}) == found({"n": {"nin": [2]}}) == ["tea at noon", "tea at three"]
    assert found({"tag": {"icontains": "drink"}}) == ["tea at noon", "tea at two"]
    assert found({"tag": {"contains": "drink"}}) == ["tea at two"]
    assert found({"tag": "*"}) == ["tea at noon", "tea at two"]
    assert found({"tag": {"gt": 5}}) == []  # another type never matches
    for bad in ({"n": {"between": [1, 2]}}, {"AND": [{"n": 1}]}, {"n": {"in": 3}}, {"n": {}}):
        with pytest.raises(MemoryInputError):
            mem.search("tea", user_id="u", filters=bad)
