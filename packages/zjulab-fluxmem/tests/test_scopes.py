"""Mem0 scope semantics: the given ids are combined filters, for every operation.

The matrix: 2 users x 2 agents x 2 runs, one memory per cell, and every non-empty combination
of the three ids (26 filters) against add, search, get_all, delete_all, feedback and
consolidate.
"""

from __future__ import annotations

import itertools

import pytest

from zjulab.fluxmem import FluxMemConfig, FluxMemory, ScopeError

USERS, AGENTS, RUNS = ("u1", "u2"), ("a1", "a2"), ("r1", "r2")
CELLS = list(itertools.product(USERS, AGENTS, RUNS))
FILTERS = [
    f
    for f in itertools.product((None, *USERS), (None, *AGENTS), (None, *RUNS))
    if any(v is not None for v in f)
]


def kw(f) -> dict:
    return {k: v for k, v in zip(("user_id", "agent_id", "run_id"), f) if v is not None}


def matches(cell, f) -> bool:
    return all(want is None or want == have for want, have in zip(f, cell))


def text(cell) -> str:
    return "shared note of {} {} {} with the word harbour".format(*cell)


def build(enc, **cfg) -> tuple[FluxMemory, dict]:
    # links on: the matrix must hold even though Stage I links across a user's agents and runs
    mem = FluxMemory(enc, config=FluxMemConfig(link_min_cosine=0.0, **cfg))
    ids = {}
    for cell in CELLS:
        (row,) = mem.add(text(cell), user_id=cell[0], agent_id=cell[1], run_id=cell[2])["results"]
        ids[cell] = row["id"]
    return mem, ids


def test_add_stores_every_given_id(enc):
    mem, ids = build(enc)
    for cell, nid in ids.items():
        rec = mem.get(nid)
        assert (rec["user_id"], rec["agent_id"], rec["run_id"]) == cell
    (row,) = mem.add("agent only", agent_id="a1")["results"]
    assert (mem.get(row["id"])["user_id"], mem.get(row["id"])["run_id"]) == (None, None)


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: "-".join(v or "*" for v in f))
def test_search_and_get_all_return_exactly_the_filtered_cells(enc, f):
    mem, ids = build(enc)
    want = {ids[c] for c in CELLS if matches(c, f)}
    got = mem.search("harbour note", top_k=50, **kw(f))["results"]
    assert {r["id"] for r in got} == want
    for r in got:  # context never leaks another scope's text
        for c in r["context"]:
            assert c["id"] in want
    listed = mem.get_all(**kw(f))["results"]
    assert [r["id"] for r in listed] == [ids[c] for c in CELLS if matches(c, f)]  # insertion order


def test_get_shows_context_only_from_the_memorys_own_scope(enc):
    mem, ids = build(enc)
    linked = 0
    for nid in ids.values():
        linked += len(mem.graph.neighbors(nid))
        assert [c["id"] for c in mem.get(nid)["context"]] == []  # one memory per cell
    assert linked  # Stage I did link across the user's agents and runs
    (row,) = mem.add("shared note of u1 a1 r1 again, harbour", user_id="u1", agent_id="a1", run_id="r1")[
        "results"
    ]
    assert ids[("u1", "a1", "r1")] in [c["id"] for c in mem.get(row["id"])["context"]]
    (wide,) = mem.add("a note of u2 for every agent, harbour", user_id="u2")["results"]
    assert {c["id"] for c in mem.get(wide["id"])["context"]} <= {ids[c] for c in CELLS if c[0] == "u2"}


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: "-".join(v or "*" for v in f))
def test_delete_all_erases_exactly_the_filtered_cells(enc, f):
    mem, ids = build(enc)
    for cell in CELLS:  # one trajectory per cell, recorded under the full scope
        mem.feedback(text(cell), "success", [ids[cell]], user_id=cell[0], agent_id=cell[1], run_id=cell[2])
    n = mem.delete_all(**kw(f))
    gone = {c for c in CELLS if matches(c, f)}
    assert n == len(gone)
    for cell in CELLS:
        assert (ids[cell] in mem.graph) == (cell not in gone)
    left = {(t["user_id"], t["agent_id"], t["run_id"]) for t in mem.trajectories()}
    assert left == set(CELLS) - gone


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: "-".join(v or "*" for v in f))
def test_feedback_and_consolidate_honour_the_filter(enc, f):
    mem, ids = build(enc, max_refinement_rounds=1, expand_top_k=8)
    inside = [c for c in CELLS if matches(c, f)]
    outside = [c for c in CELLS if not matches(c, f)]
    if outside:
        with pytest.raises(ScopeError, match="another scope"):
            mem.feedback("harbour", "failure", [ids[outside[0]]], **kw(f))
    before = {(e.source, e.target, e.kind) for e in mem.graph.edges()}
    rep = mem.feedback("harbour note", "failure", **kw(f), top_k=1)  # no evidence: expand
    added = {(e.source, e.target, e.kind) for e in mem.graph.edges()} - before
    allowed = {ids[c] for c in inside}
    assert rep.rounds and all(s in allowed and t in allowed for s, t, _ in added)
    # trajectories are recorded under the filter; consolidate takes exactly those it matches
    for cell in CELLS:
        mem.feedback(text(cell), "success", [ids[cell]], user_id=cell[0], agent_id=cell[1], run_id=cell[2])
    cons = mem.consolidate(**kw(f))
    used = {tid for c in cons.clusters for tid in c}
    by_id = {t["id"]: t for t in mem.trajectories()}
    got = {
        (by_id[t]["user_id"], by_id[t]["agent_id"], by_id[t]["run_id"]) for t in used if by_id[t]["success"]
    }
    assert got == set(inside)
    for sk in cons.skills:  # skills live in the scope their trajectories share, never wider
        node = mem.get(sk.skill_id)
        for name, value in kw(f).items():
            assert node[name] == value


def test_narrowed_search_finds_a_match_beyond_the_global_top(enc):
    """A run-narrowed search must not be a filter applied after a user-wide top-N."""
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, link_adjacent=False))
    for i in range(1500):
        mem.add(f"Sam note {i}: the harbour ferry leaves at {i % 24} o'clock", user_id="sam", run_id="old")
    new = mem.add("quiet morning", user_id="sam", run_id="new")["results"][0]["id"]
    hits = mem.search("harbour ferry leaves", user_id="sam", run_id="new")["results"]
    assert [h["id"] for h in hits] == [new]
    assert [h["id"] for h in mem.search("harbour ferry", run_id="new")["results"]] == [new]


@pytest.mark.parametrize(
    "flt", [{"tag": "new"}, {"tag": {"in": ["new"]}}, {"tag": {"ne": "old"}}, {"tag": "*"}], ids=str
)
def test_metadata_filtered_search_finds_a_match_beyond_the_unfiltered_top(enc, flt):
    """A metadata filter narrows the candidates (as Mem0's vector stores do), not the top-N."""
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, link_adjacent=False))
    for i in range(1500):
        meta = None if flt == {"tag": "*"} else {"tag": "old"}
        mem.add(f"Sam note {i}: the harbour ferry leaves at {i % 24} o'clock", user_id="sam", metadata=meta)
    new = mem.add("quiet morning", user_id="sam", metadata={"tag": "new"})["results"][0]["id"]
    mem.add("quiet morning", user_id="bob", metadata={"tag": "new"})
    hits = mem.search("harbour ferry leaves", user_id="sam", filters=flt)["results"]
    assert [h["id"] for h in hits] == [new]
    assert [r["id"] for r in mem.get_all(user_id="sam", filters=flt)["results"]] == [new]


def test_metadata_filtered_search_with_many_matches_still_finds_the_best_one(enc):
    """More admitted nodes than candidates: the best admitted match still ranks first."""
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, link_adjacent=False, search_candidates=20))
    for i in range(600):
        mem.add(
            f"Sam note {i}: the harbour ferry leaves at {i % 24} o'clock",
            user_id="sam",
            metadata={"tag": "old"},
        )
        mem.add(f"quiet morning number {i} in the garden", user_id="sam", metadata={"tag": "new"})
    best = mem.add("the harbour ferry timetable", user_id="sam", metadata={"tag": "new"})["results"][0]["id"]
    hits = mem.search("harbour ferry leaves", user_id="sam", filters={"tag": "new"}, top_k=5)["results"]
    assert hits[0]["id"] == best
    assert all(h["metadata"]["tag"] == "new" for h in hits) and len(hits) == 5


@pytest.mark.parametrize(
    ("meta", "flt"),
    [
        ({"n": 7}, {"n": 7}),
        ({"n": 7.0}, {"n": 7}),
        ({"flag": True}, {"flag": True}),
        ({'k"ey': "v"}, {'k"ey': "v"}),
        ({"tag": "rare", "other": -1}, {"tag": "rare", "other": {"lt": 0}, "kind": "episodic"}),
    ],
    ids=str,
)
def test_a_rare_filter_matches_the_same_values_as_get_all(enc, meta, flt):
    """The scan behind a rare filter (SQL pre-filter, then the Python match) agrees with get_all."""
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, link_adjacent=False, search_candidates=5))
    for i in range(120):
        mem.add(f"harbour ferry note {i}", user_id="u", metadata={"n": "7", "flag": 1, "other": i})
    rare = mem.add("quiet morning", user_id="u", metadata=meta)["results"][0]["id"]
    want = [r["id"] for r in mem.get_all(user_id="u", filters=flt, limit=500)["results"]]
    got = [h["id"] for h in mem.search("harbour ferry", user_id="u", filters=flt, top_k=3)["results"]]
    assert set(got) <= set(want) and len(got) == min(3, len(want))
    if len(want) == 1:
        assert got == [rare]
    assert rare in want
