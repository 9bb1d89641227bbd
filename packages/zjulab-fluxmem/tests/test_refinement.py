"""Stage II on hand-built graphs: expand, prune and reshape produce exactly the expected edits."""

from __future__ import annotations

import json

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.fluxmem import FluxMemConfig, FluxMemory, MemoryInputError, MemoryNotFoundError, ScopeError


def edges(mem: FluxMemory) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in mem.graph.edges()}


def ids_of(res: dict) -> list[str]:
    return [r["id"] for r in res["results"]]


@pytest.fixture
def expand_mem(enc):
    cfg = FluxMemConfig(max_links=0, link_adjacent=False, expand_top_k=2, max_refinement_rounds=1)
    mem = FluxMemory(enc, config=cfg)
    a, b, c, d, e = ids_of(
        mem.add(
            [
                "Sam moved to Porto for work",
                "Maya leads the branding team",
                "Sam likes work trips to Porto",
                "zebra quantum flux",
                "violin sonata recital",
            ],
            user_id="u",
        )
    )
    return mem, (a, b, c, d, e)


def test_expand_without_evidence_links_nearest_unseen_units(expand_mem):
    mem, (a, _b, c, _d, _e) = expand_mem
    rep = mem.feedback("Where did Sam move for work?", "failure", user_id="u", top_k=1)
    assert rep.rounds[0].added_edges[0] == (a, c, "associate")  # c: the next-nearest to the query
    assert len(rep.rounds[0].added_edges) == 2  # expand_top_k


def test_expand_links_anchor_to_missing_evidence(expand_mem):
    mem, (a, b, _c, _d, _e) = expand_mem
    q = "Where did Sam move for work?"
    assert [h["id"] for h in mem.search(q, user_id="u", top_k=1)["results"]] == [a]
    rep = mem.feedback(q, "failure", [b], user_id="u", top_k=1)
    (rnd,) = rep.rounds
    assert (rnd.action, rnd.decided_by, rnd.target) == ("expand", "heuristic", a)
    # the evidence of the failure decides the repair: one link to it, no speculative neighbours
    assert rnd.added_edges == [(a, b, "associate")]
    assert edges(mem) == {(a, b, "associate")}
    assert mem.graph.find_edge(a, b, "associate").weight == 1.0
    assert mem.graph.find_edge(a, b, "associate").stage == "refinement"
    assert [h["stage"] for h in mem.history(b) if h["event"] == "LINK"] == ["refinement"]
    assert rep.resolved is False  # evidence still outside the top-1


def test_expand_lifts_evidence_and_loop_stops_when_fixed(enc):
    cfg = FluxMemConfig(max_links=0, link_adjacent=False, context_weight=1.0)
    mem = FluxMemory(enc, config=cfg)
    _a, b, *_ = ids_of(
        mem.add(
            ["Sam moved to Porto for work", "Maya leads the branding team", "Sam likes work trips"],
            user_id="u",
        )
    )
    q = "Where did Sam move for work?"
    assert b not in [h["id"] for h in mem.search(q, user_id="u", top_k=2)["results"]]
    rep = mem.feedback(q, False, [b], user_id="u", top_k=2)
    assert len(rep.rounds) == 1 and rep.resolved is True
    assert b in [h["id"] for h in mem.search(q, user_id="u", top_k=2)["results"]]


@pytest.fixture
def chain_mem(enc):
    cfg = FluxMemConfig(max_links=0, link_adjacent=True, max_refinement_rounds=1)
    mem = FluxMemory(enc, config=cfg)
    ids = ids_of(mem.add(["alpha apple", "bravo banana", "charlie cherry", "delta date"], user_id="u"))
    return mem, ids


def test_prune_drops_links_of_interfering_units(chain_mem):
    mem, (a, b, c, d) = chain_mem
    assert edges(mem) == {(a, b, "next"), (b, c, "next"), (c, d, "next")}
    rep = mem.feedback("alpha", "failure", [a], user_id="u", reason="bravo banana", action="prune")
    assert sorted(rep.rounds[0].removed_edges) == sorted([(a, b, "next"), (b, c, "next")])
    assert edges(mem) == {(c, d, "next")}
    unl = [h for h in mem.history(b) if h["event"] == "UNLINK"]
    assert [(h["stage"], h["detail"]["reason"]) for h in unl] == [("refinement", "interference")] * 2


def test_prune_with_llm_attribution_and_verification(chain_mem):
    mem, (a, b, c, d) = chain_mem
    assert d

    def reply(conv):
        text = conv[-1]["content"]
        if "Decide whether the failure" in text:
            return json.dumps(
                {"type": "connection", "action": "prune", "target": 0, "details": "the cherry talk"}
            )
        lines = [ln for ln in text.splitlines() if ln.startswith("[")]
        return json.dumps({"scores": [0.95 if "cherry" in ln else 0.0 for ln in lines]})

    chat = ScriptedChatModel(reply)
    mem.chat_model = mem.reasoner.chat_model = chat
    rep = mem.feedback("alpha", "failure", [a], user_id="u")
    (rnd,) = rep.rounds
    assert (rnd.action, rnd.decided_by, rnd.details) == ("prune", "llm", "the cherry talk")
    assert sorted(rnd.removed_edges) == sorted([(b, c, "next"), (c, d, "next")])
    assert "Failure: the answer was wrong" in chat.calls[0][-1]["content"]


def test_malformed_attribution_falls_back_to_heuristic(chain_mem):
    mem, (a, b, c, _d) = chain_mem
    chat = ScriptedChatModel(default="The failure is complicated.")
    mem.chat_model = mem.reasoner.chat_model = chat
    rep = mem.feedback("alpha apple", "failure", [a], user_id="u", reason="bravo banana")
    # evidence already retrieved -> the heuristic picks prune; the verifier also fails -> cosine
    assert (rep.rounds[0].action, rep.rounds[0].decided_by) == ("prune", "heuristic")
    assert sorted(rep.rounds[0].removed_edges) == sorted([(a, b, "next"), (b, c, "next")])
    assert mem.reasoner.failures >= 2


def test_reshape_split_adds_grounded_parts_and_keeps_the_original(enc):
    cfg = FluxMemConfig(max_links=0, max_refinement_rounds=1)
    mem = FluxMemory(enc, config=cfg)
    a, t = ids_of(mem.add(["Ana: hello there", "I moved to Lisbon. I work at a bakery."], user_id="u"))
    rep = mem.feedback(
        "I moved to Lisbon. I work at a bakery.", "failure", [a], user_id="u", action="reshape"
    )
    (rnd,) = rep.rounds
    p1, p2 = rnd.added_nodes
    assert (rnd.type, rnd.target, rnd.removed_nodes) == ("unit", t, [])
    assert [mem.graph.node(p).content for p in (p1, p2)] == ["I moved to Lisbon.", "I work at a bakery."]
    assert edges(mem) == {(a, t, "next"), (p1, t, "ground"), (p2, t, "ground"), (p1, p2, "associate")}
    split = mem.history(t)[-1]
    assert (split["event"], split["stage"], split["detail"]["into"]) == ("SPLIT", "refinement", [p1, p2])
    # the user's words stay, under the id add() returned
    assert mem.get(t)["memory"] == "I moved to Lisbon. I work at a bakery."
    assert mem.get(p1)["kind"] == "semantic"
    assert mem.get(p1)["metadata"] == {"derived": "split", "sources": [t]}


def test_reshape_merge_by_chat_model_is_derived(enc):
    cfg = FluxMemConfig(max_links=0, max_refinement_rounds=1)
    chat = ScriptedChatModel(['{"mode": "merge", "parts": ["Ana moved to Lisbon and works at a bakery"]}'])
    mem = FluxMemory(enc, chat, cfg)
    mem.config.extract_facts = False
    z, a, t = ids_of(mem.add(["Ana: hi", "Ana moved to Lisbon", "Ana works at a bakery"], user_id="u"))
    rep = mem.feedback("Ana works at a bakery", "failure", [z], user_id="u", action="reshape")
    (rnd,) = rep.rounds
    (n,) = rnd.added_nodes
    assert rnd.removed_nodes == []
    assert mem.graph.node(n).content == "Ana moved to Lisbon and works at a bakery"
    assert {(n, t, "ground"), (n, a, "ground")} <= edges(mem)
    assert [mem.get(x)["memory"] for x in (a, t)] == ["Ana moved to Lisbon", "Ana works at a bakery"]
    assert {mem.history(x)[-1]["event"] for x in (a, t)} == {"MERGE"}
    assert "Related memory: Ana moved to Lisbon" in chat.calls[0][-1]["content"]


def test_reshape_rejects_a_model_rewrite_that_is_not_grounded(enc):
    cfg = FluxMemConfig(max_links=0, link_adjacent=False, max_refinement_rounds=1)
    chat = ScriptedChatModel(['{"mode": "split", "parts": ["Maya lives in Madrid.", "Maya is a lawyer."]}'])
    mem = FluxMemory(enc, chat, cfg)
    mem.config.extract_facts = False
    ids_of(mem.add("Maya moved to Porto to work at a design studio", user_id="sam"))
    rep = mem.feedback("Where does Maya work?", "failure", user_id="sam", action="reshape")
    assert rep.rounds[0].added_nodes == [] and "ungrounded" in rep.rounds[0].details
    assert [r["memory"] for r in mem.get_all(user_id="sam")["results"]] == [
        "Maya moved to Porto to work at a design studio"
    ]


def test_reshape_never_undoes_its_own_edit(enc):
    """Five forced rounds: split once, then nothing is split or merged back (no oscillation)."""
    cfg = FluxMemConfig(max_links=0, max_refinement_rounds=5)
    mem = FluxMemory(enc, config=cfg)
    a, t = ids_of(mem.add(["Ana: hello there", "I moved to Lisbon. I work at a bakery."], user_id="u"))
    q = "I moved to Lisbon. I work at a bakery."
    for _ in range(3):
        mem.feedback(q, "failure", [a], user_id="u", action="reshape", check=lambda r: False)
    kinds = [r["kind"] for r in mem.get_all(user_id="u")["results"]]
    assert kinds.count("semantic") == 2  # the two parts of one split, never re-merged or re-split
    events = [h["event"] for h in mem.history(t)]
    assert events.count("SPLIT") == 1 and "MERGE" not in events
    contents = sorted(r["memory"] for r in mem.get_all(user_id="u")["results"])
    assert len(contents) == len(set(contents))


def test_success_records_trajectory_and_errors(chain_mem):
    mem, (a, *_) = chain_mem
    rep = mem.feedback("alpha", "success", [a], user_id="u")
    assert rep.success and rep.rounds == [] and rep.resolved
    assert mem.stats()["pending_trajectories"] == 1
    with pytest.raises(MemoryInputError, match="outcome"):
        mem.feedback("alpha", "maybe", user_id="u")
    with pytest.raises(MemoryInputError, match="action"):
        mem.feedback("alpha", False, user_id="u", action="explode")
    with pytest.raises(MemoryNotFoundError, match="evidence"):
        mem.feedback("alpha", False, ["nope"], user_id="u")
    other = mem.add("x", user_id="v")["results"][0]["id"]
    with pytest.raises(ScopeError, match="another scope"):
        mem.feedback("alpha", False, [other], user_id="u")


def test_custom_check_and_round_limit(chain_mem):
    mem, _ = chain_mem
    mem.config.max_refinement_rounds = 3
    calls = []
    rep = mem.feedback("alpha", False, user_id="u", check=lambda results: calls.append(len(results)) or False)
    assert rep.resolved is False and 1 <= len(rep.rounds) <= 3 and calls


def test_prune_uses_the_evidence_when_the_model_names_no_target(enc):
    """Distractors ranked above missing evidence lose the 1.0-weight link between them; the
    link to the evidence (what expand makes) stays, so prune never undoes expand."""
    cfg = FluxMemConfig(max_links=0, link_adjacent=False, max_refinement_rounds=1)
    chat = ScriptedChatModel(
        lambda conv: (
            json.dumps({"type": "connection", "action": "prune", "target": None, "details": ""})
            if "Decide whether the failure" in conv[-1]["content"]
            else json.dumps({"scores": [0.0] * 8})
        )
    )
    mem = FluxMemory(enc, chat, cfg)
    mem.config.extract_facts = False
    ev, d1, d2, far = ids_of(
        mem.add(
            [
                "Maya leads the branding team",
                "What does Maya do at the studio pottery class",
                "What does Maya do at the studio on Mondays",
                "weather is mild",
            ],
            user_id="u",
        )
    )
    mem._link(d1, d2, "associate", 1.0, "formation")
    mem._link(d1, ev, "associate", 1.0, "refinement")
    mem._link(far, ev, "next", 1.0, "formation")
    q = "What does Maya do at the studio?"
    assert {h["id"] for h in mem.search(q, user_id="u", top_k=2)["results"]} == {d1, d2}
    rep = mem.feedback(q, "failure", [ev], user_id="u", top_k=2)
    (rnd,) = rep.rounds
    assert (rnd.action, rnd.decided_by) == ("prune", "llm")
    assert rnd.removed_edges == [(d1, d2, "associate")]
    assert mem.graph.find_edge(d1, ev, "associate") is not None
    assert mem.graph.find_edge(far, ev, "next") is not None
