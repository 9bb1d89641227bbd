"""Stage III: clustering, circuits and the PEMS-guided refinement loop."""

from __future__ import annotations

import json
import math

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.fluxmem import FluxMemConfig, FluxMemory, num_clusters, pems, skill_delta
from zjulab.fluxmem.consolidation import render_skill


def ids_of(res: dict) -> list[str]:
    return [r["id"] for r in res["results"]]


def test_fallback_consolidation_makes_one_circuit_per_cluster(enc):
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, link_adjacent=False))
    pasta, water, tent, stakes = ids_of(
        mem.add(
            [
                "boil pasta in salted water",
                "drain pasta water quickly",
                "pitch tent on flat ground",
                "hammer tent stakes down",
            ],
            user_id="u",
        )
    )
    cooking = [
        ("how do I cook pasta", [pasta, water]),
        ("pasta cooking steps", [pasta]),
        ("cook pasta water", [pasta, water]),
        ("pasta dinner", [water, pasta]),
    ]
    camping = [
        ("how to pitch a tent", [tent, stakes]),
        ("tent camping setup", [tent]),
        ("set up tent stakes", [stakes, tent]),
        ("camping tent ground", [tent]),
    ]
    for q, ev in cooking + camping:
        mem.feedback(q, "success", ev, user_id="u")
    mem.feedback(
        "failed task", "failure", [pasta], user_id="u", action="prune"
    )  # failures are not consolidated
    rep = mem.consolidate(user_id="u")
    assert rep.k == num_clusters(8) == 2
    groups = [
        sorted({t["id"]: t for t in mem.trajectories(user_id="u")}[i]["query"] for i in c)
        for c in rep.clusters
    ]
    assert sorted(groups) == sorted([sorted(q for q, _ in cooking), sorted(q for q, _ in camping)])
    by_first = {s.steps[0]: s for s in rep.skills}
    cook = by_first["Recall: boil pasta in salted water"]
    assert cook.steps == ["Recall: boil pasta in salted water", "Recall: drain pasta water quickly"]
    # no chat model: the text never changes, so δ = 0 and PEMS repeats -> stops at round 2
    assert len(cook.pems_history) == 2 and cook.converged
    n_proc = 1 if cook is rep.skills[0] else 2
    text = render_skill(cook.name, cook.steps)
    assert cook.pems_history[0] == pytest.approx(1.0 / (n_proc * math.log(len(text.split()))))
    # the circuit: skill -> step 1 -> step 2, and distill links from the memories used
    es = {(e.source, e.target, e.kind) for e in mem.graph.edges()}
    s1, s2 = cook.step_ids
    assert {
        (cook.skill_id, s1, "step"),
        (s1, s2, "step"),
        (pasta, cook.skill_id, "distill"),
        (water, cook.skill_id, "distill"),
    } <= es
    head = mem.get(cook.skill_id)
    assert head["kind"] == "procedural" and head["metadata"]["role"] == "skill"
    assert head["metadata"]["pems_history"] == cook.pems_history
    assert mem.history(cook.skill_id)[0]["stage"] == "consolidation"
    assert mem.stats()["pending_trajectories"] == 0
    assert mem.consolidate(user_id="u").k == 0  # nothing new


def test_pems_loop_with_chat_model_and_replay(enc):
    drafts = iter(
        [
            {"name": "Cook pasta", "steps": ["Boil water", "Add pasta"]},
            {"name": "Cook pasta", "steps": ["Boil salted water", "Add pasta", "Drain it"]},
        ]
    )
    last = {"name": "Cook pasta", "steps": ["Boil salted water", "Add pasta", "Drain it"]}
    chat = ScriptedChatModel(lambda conv: json.dumps(next(drafts, last)))
    cfg = FluxMemConfig(
        max_links=0, link_adjacent=False, num_clusters=1, extract_facts=False, verify_links=False
    )
    mem = FluxMemory(enc, chat, cfg)
    a, b = ids_of(mem.add(["boil pasta", "drain pasta"], user_id="u"))
    for q in ("cook pasta", "make pasta"):
        mem.feedback(q, "success", [a, b], user_id="u")
    replays = []

    def replay(skill_text, trajectory):
        replays.append(skill_text)
        return trajectory["query"] == "cook pasta"

    rep = mem.consolidate(user_id="u", replay=replay)
    (sk,) = rep.skills
    t1 = render_skill("Cook pasta", ["Boil water", "Add pasta"])
    t2 = render_skill("Cook pasta", ["Boil salted water", "Add pasta", "Drain it"])
    e1, e2 = enc.encode([t1, t2])
    p1 = pems(0.5, 1, len(t1.split()), 0.0)
    p2 = pems(0.5, 1, len(t2.split()), skill_delta(e2, e1))
    assert p1 == pytest.approx(0.5 / math.log(8))
    assert p2 < p1  # longer and moved away: version 2 scores lower
    # keep-best: version 2 is rolled back, round 3 refines version 1 again and the model
    # answers t2 again (same δ to t1) -> PEMS repeats -> |ΔPEMS| = 0 stops the loop
    assert sk.pems_history == pytest.approx([p1, p2, p2])
    assert sk.converged and sk.best_round == 1 and sk.eta_source == "replay"
    assert sk.steps == ["Boil water", "Add pasta"]  # the best version is the one written
    assert mem.get(sk.skill_id)["memory"] == t1
    assert mem.get(sk.skill_id)["metadata"]["pems"] == pytest.approx(p1)
    assert replays[:2] == [t1, t1]  # η of version 1 from replaying both trajectories
    assert "Boil water" in chat.calls[2][-1]["content"]  # round 3 starts again from version 1
    assert "PEMS" in chat.calls[1][-1]["content"]  # the refinement prompt carries the score


def test_malformed_induction_falls_back(enc):
    chat = ScriptedChatModel(default='{"name": "<string>", "steps": ["<string>"]}')
    cfg = FluxMemConfig(max_links=0, num_clusters=1, extract_facts=False, verify_links=False)
    mem = FluxMemory(enc, chat, cfg)
    (a,) = ids_of(mem.add(["boil pasta"], user_id="u"))
    mem.feedback("cook pasta", "success", [a], user_id="u")
    (sk,) = mem.consolidate(user_id="u").skills
    assert sk.steps == ["Recall: boil pasta"]
