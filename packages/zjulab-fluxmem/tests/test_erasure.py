"""Erasure reaches everything derived; arguments get typed errors; the core imports without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.fluxmem import FluxMemConfig, FluxMemory, MemoryInputError, MemoryNotFoundError, ScopeError


def fact_model(facts: dict[str, str]) -> ScriptedChatModel:
    """Extracts ``facts[trigger]`` from a message containing ``trigger``; anything else: none."""

    def reply(conv):
        text = conv[-1]["content"]
        if "durable facts" in text:
            for trigger, fact in facts.items():
                if trigger in text:
                    return json.dumps({"facts": [{"text": fact, "sources": [0]}]})
            return json.dumps({"facts": []})
        return "no"

    return ScriptedChatModel(reply)


@pytest.fixture
def pin_mem(enc):
    chat = fact_model({"bank PIN": "Sam's bank PIN is 4921.", "passport": "Sam's passport number is X12345."})
    mem = FluxMemory(enc, chat, FluxMemConfig(verify_links=False))
    ep = mem.add("My bank PIN is 4921", user_id="sam")["results"][0]["id"]
    return mem, ep


def texts(mem, **scope) -> list[str]:
    return [r["memory"] for r in mem.get_all(limit=1000, **scope)["results"]]


def test_delete_erases_the_fact_grounded_in_it(pin_mem):
    mem, ep = pin_mem
    assert "Sam's bank PIN is 4921." in texts(mem, user_id="sam")
    mem.delete(ep)
    assert texts(mem, user_id="sam") == []
    assert mem.search("bank PIN", user_id="sam")["results"] == []
    # the events stay readable, the erased words do not
    hist = mem.history(ep)
    assert [h["event"] for h in hist][-1] == "DELETE"
    assert all(h["old_memory"] is None and h["new_memory"] is None for h in hist)


def test_update_erases_stale_derived_facts(pin_mem):
    mem, ep = pin_mem
    mem.update(ep, "My bank PIN is 7777")
    assert texts(mem, user_id="sam") == ["My bank PIN is 7777"]
    assert mem.search("bank PIN", user_id="sam")["results"][0]["memory"] == "My bank PIN is 7777"
    (upd,) = [h for h in mem.history(ep) if h["event"] == "UPDATE"]
    assert upd["old_memory"] == "My bank PIN is 4921"  # the user's own change log


def test_delete_erases_skills_steps_and_trajectories_that_copied_it(enc):
    chat = fact_model({})
    mem = FluxMemory(enc, None, FluxMemConfig(max_links=0, num_clusters=1))
    assert chat
    pp = mem.add("My passport number is X12345", user_id="sam")["results"][0]["id"]
    other = mem.add("I fly from Lisbon airport", user_id="sam")["results"][0]["id"]
    mem.feedback("Book my flight", "success", [pp, other], user_id="sam")
    (sk,) = mem.consolidate(user_id="sam").skills
    assert any("X12345" in s for s in sk.steps)
    mem.feedback("Which airport?", "success", [other], user_id="sam")  # does not use the passport
    mem.delete(pp)
    for nid in [sk.skill_id, *sk.step_ids]:
        with pytest.raises(MemoryNotFoundError):
            mem.get(nid)
    assert [t["query"] for t in mem.trajectories(user_id="sam")] == ["Which airport?"]
    assert texts(mem, user_id="sam") == ["I fly from Lisbon airport"]
    assert not any("X12345" in t["text"] for t in mem.trajectories())


def test_update_drops_the_trajectories_that_copied_the_old_text(enc):
    """No consolidation yet: the trajectories are the only copies, and a later one would revive them."""
    mem = FluxMemory(enc, None, FluxMemConfig(max_links=0, num_clusters=1))
    pp = mem.add("My passport number is X12345", user_id="sam")["results"][0]["id"]
    other = mem.add("I fly from Lisbon airport", user_id="sam")["results"][0]["id"]
    mem.feedback("Book my flight", "success", [pp], user_id="sam")
    mem.feedback("Which airport?", "success", [other], user_id="sam")
    assert any("X12345" in t["text"] for t in mem.trajectories(user_id="sam"))
    mem.update(pp, "My passport number is Y99999")
    assert [t["query"] for t in mem.trajectories(user_id="sam")] == ["Which airport?"]
    (sk,) = mem.consolidate(user_id="sam").skills
    assert not any("X12345" in s for s in sk.steps)
    mem.update(other, "My phone is 555", metadata={"k": 1})  # text and metadata together
    assert mem.trajectories(user_id="sam") == []
    mem.feedback("Which phone?", "success", [other], user_id="sam")
    mem.update(other, metadata={"k": 2})  # metadata only: the text the trajectory copies stands
    assert [t["query"] for t in mem.trajectories(user_id="sam")] == ["Which phone?"]


def test_delete_erases_reshaped_parts(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, max_refinement_rounds=1))
    (t,) = [r["id"] for r in mem.add("I moved to Lisbon. My PIN is 4921.", user_id="u")["results"]]
    rep = mem.feedback("PIN", "failure", user_id="u", action="reshape")
    assert len(rep.rounds[0].added_nodes) == 2
    mem.delete(t)
    assert texts(mem, user_id="u") == []


def test_delete_all_of_one_run_keeps_the_other_runs_and_their_facts(enc):
    chat = fact_model({"bank PIN": "Sam's bank PIN is 4921.", "cat": "Sam has a cat named Miso."})
    mem = FluxMemory(enc, chat, FluxMemConfig(verify_links=False))
    mem.add("My bank PIN is 4921", user_id="sam", run_id="r1")
    mem.add("I have a cat named Miso", user_id="sam", run_id="r2")
    assert mem.delete_all(user_id="sam", run_id="r1") == 2  # the message and its fact
    assert sorted(texts(mem, user_id="sam")) == ["I have a cat named Miso", "Sam has a cat named Miso."]


def test_a_search_with_run_narrowing_shows_no_other_run_in_context(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(link_min_cosine=0.0))
    mem.add("secret plan for run one about the harbour", user_id="u", run_id="r1")
    mem.add("harbour trip planning", user_id="u", run_id="r2")
    (hit,) = mem.search("harbour", user_id="u", run_id="r2")["results"]
    assert mem.search("harbour", user_id="u")["results"][0]["context"]  # linked across runs
    assert hit["context"] == []


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.search("q", user_id="u", top_k="5"), "top_k must be an int, got str"),
        (lambda m: m.search("q", user_id="u", top_k=2.5), "top_k must be an int, got float"),
        (lambda m: m.search("q", user_id="u", top_k=True), "top_k must be an int, got bool"),
        (lambda m: m.search("q", user_id="u", top_k=0), "top_k must be >= 1"),
        (lambda m: m.search("q", user_id="u", threshold="0.5"), "threshold must be a finite number"),
        (lambda m: m.search("q", user_id="u", threshold=float("nan")), "threshold must be a finite number"),
        (lambda m: m.search("q", user_id="u", filters=["kind"]), "filters must be a dict"),
        (lambda m: m.get_all(user_id="u", limit="10"), "limit must be an int"),
        (lambda m: m.add("x", user_id="u", infer="yes"), "infer must be a bool"),
        (lambda m: m.add([{"content": "x", "name": 3}], user_id="u"), "name must be a string"),
        (lambda m: m.feedback("q", False, "abc", user_id="u"), "evidence must be a list"),
        (lambda m: m.feedback("q", False, [1], user_id="u"), "evidence ids must be strings"),
        (lambda m: m.feedback("q", False, user_id="u", top_k="3"), "top_k must be an int"),
        (lambda m: m.consolidate(user_id="u", replay="yes"), "replay must be callable"),
        (lambda m: m.update("x", ""), "update text"),
    ],
)
def test_every_public_argument_gets_a_typed_error(enc, call, match):
    mem = FluxMemory(enc)
    mem.add("a note", user_id="u")
    with pytest.raises(MemoryInputError, match=match):
        call(mem)
    assert len(mem.get_all(user_id="u")["results"]) == 1


def test_scope_ids_and_unknown_ids_get_typed_errors(enc):
    mem = FluxMemory(enc)
    with pytest.raises(ScopeError, match="agent_id must be a non-empty string"):
        mem.add("x", user_id="u", agent_id=7)
    with pytest.raises(ScopeError, match="one of user_id"):
        mem.delete_all()
    for call in (lambda: mem.get("nope"), lambda: mem.delete("nope"), lambda: mem.history(5)):
        with pytest.raises(MemoryNotFoundError):
            call()
    with pytest.raises(MemoryInputError, match="path must be a path"):
        FluxMemory(enc, path=3)


_LEAN = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "missing":
        for name in ("torch", "transformers", "peft", "sentence_transformers"):
            sys.modules[name] = None
    import zjulab.fluxmem
    from zjulab.fluxmem import FluxMemory
    from zjulab.fluxmem.cli import main
    from zjulab.common.testing import HashingEncoder
    try:
        main(["--help"])
    except SystemExit:
        pass
    mem = FluxMemory(HashingEncoder(64))
    mem.add("lean install", user_id="u")
    assert mem.search("lean", user_id="u")["results"]
    loaded = sorted(m for m in ("torch", "transformers", "peft") if sys.modules.get(m) is not None)
    print("loaded:", loaded)
    if sys.argv[1] == "missing":
        from zjulab.common.errors import MissingDependencyError
        try:
            FluxMemory.from_pretrained()
        except MissingDependencyError as exc:
            print("typed:", exc)
    """
)


@pytest.mark.parametrize("mode", ["present", "missing"])
def test_the_core_imports_and_runs_without_torch(mode):
    out = subprocess.run([sys.executable, "-c", _LEAN, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout
    if mode == "missing":
        assert "pip install 'zjulab-fluxmem[torch]'" in out.stdout
