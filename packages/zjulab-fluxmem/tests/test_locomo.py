"""LoCoMo loader, official F1 rules, evidence recall and the evaluation harness."""

from __future__ import annotations

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.fluxmem import DatasetError, FluxMemory
from zjulab.fluxmem.locomo import (
    FlatRAG,
    answer_f1,
    evaluate_locomo,
    evidence_recall,
    load_locomo,
    locomo_score,
    normalize_answer,
)


def test_normalize_answer():
    assert normalize_answer("The Cat, and a Dog!") == "cat dog"
    assert normalize_answer("  7 May,  2023. ") == "7 may 2023"


def test_answer_f1_by_hand():
    # "cats sat" vs "cat sits" -> stems cat, sat / cat, sit -> 1 common: P = R = 1/2
    assert answer_f1("The cats sat", "a cat sits") == pytest.approx(0.5)
    assert answer_f1("7 May 2023", "7 May, 2023") == 1.0
    assert answer_f1("nothing", "Lisbon") == 0.0
    # P = 1/3, R = 1 -> F1 = 0.5
    assert answer_f1("in Lisbon city", "Lisbon") == pytest.approx(0.5)


def test_category_rules():
    # multi-hop: mean over gold parts of the best matching predicted part
    assert locomo_score("Paris, London", "London, Rome", 1) == pytest.approx(0.5)
    # open-domain: only the part before ';'
    assert locomo_score("psychology", "Psychology; counseling certification", 3) == 1.0
    assert locomo_score("No information available.", "x", 5) == 1.0
    assert locomo_score("It is not mentioned", "x", 5) == 1.0
    assert locomo_score("Lisbon", "x", 5) == 0.0
    assert locomo_score("Lisbon", "Lisbon", 4) == 1.0


def test_evidence_recall():
    got = ["D1:1", "D1:2", "D1:3"]
    assert evidence_recall(got, ["D1:2", "D1:5"], 1) == 0.0
    assert evidence_recall(got, ["D1:2", "D1:5"], 2) == 0.5
    assert evidence_recall(got, ["D1:1", "D1:3"], 10) == 1.0
    with pytest.raises(ValueError):
        evidence_recall(got, [], 5)


def test_load_locomo_cleans_evidence(tiny_locomo_file):
    (s,) = load_locomo(tiny_locomo_file)
    assert s.sample_id == "conv-t" and len(s.turns) == 5 and len(s.sessions()) == 2
    assert s.turns[2].content == "Ana: A beagle [shares a photo of a beagle]"
    assert [q.evidence for q in s.qa] == [["D1:3"], ["D2:1"], ["D1:1", "D1:3"], []]
    assert s.qa[3].answer == "x"


def test_load_locomo_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_locomo(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('[{"qa": []}]')
    with pytest.raises(DatasetError, match="conversation 0"):
        load_locomo(tmp_path / "bad.json")
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(DatasetError, match="list of conversations"):
        load_locomo(tmp_path / "obj.json")


def test_flat_rag_ranks_by_cosine(enc, tiny_locomo_file):
    (s,) = load_locomo(tiny_locomo_file)
    rag = FlatRAG(enc)
    rag.index(s.turns)
    assert rag.retrieve("pottery classes", 1) == ["D2:1"]


def test_evaluate_locomo_harness(enc, tiny_locomo_file):
    path = tiny_locomo_file
    chat = ScriptedChatModel(default='{"answer": "beagle"}')
    rep = evaluate_locomo(
        path, enc, chat_model=chat, ks=(1, 5), f1_questions=1, ablation=True, show_progress=False
    )
    assert rep.counts == {4: 1, 2: 1, 1: 1, 0: 3}
    for system in ("fluxmem", "flat_rag"):
        assert rep.recall[system][5][0] == 1.0  # 5 turns: everything is within the top 5
        assert 0.0 <= rep.recall[system][1][0] <= 1.0
        assert rep.f1[system] == {4: 1.0, 0: 1.0}  # the one answered question is the beagle one
    assert rep.f1_counts == {4: 1, 0: 1}
    assert rep.recall["fluxmem_no_graph"][5][0] == 1.0 and "fluxmem_no_graph" not in rep.f1
    assert "recall@5" in rep.table() and "| fluxmem | F1 |" in rep.table()


def test_real_locomo_file(shared_data):
    samples = load_locomo(shared_data / "locomo" / "locomo10.json")
    assert len(samples) == 10
    assert sum(len(s.turns) for s in samples) == 5882
    cats = {}
    for s in samples:
        for q in s.qa:
            cats[q.category] = cats.get(q.category, 0) + 1
    assert cats == {1: 282, 2: 321, 3: 96, 4: 841, 5: 446}
    assert sum(1 for s in samples for q in s.qa if q.category < 5 and not q.evidence) <= 5


def test_plain_text_answers_degrade_to_first_line(enc, tmp_path):
    from zjulab.fluxmem.reasoner import MemoryReasoner

    r = MemoryReasoner(
        ScriptedChatModel(["It was a beagle.\nMore text", '{"answer": "Rex"}', "<string>"]), max_retries=0
    )
    assert r.answer([("q", ["m"]), ("q", ["m"]), ("q", ["m"])]) == ["It was a beagle.", "Rex", None]
    assert MemoryReasoner(None).answer([("q", [])]) == [None]


def test_heldout_refinement_measures_the_other_half(tiny_locomo_file, enc):
    from zjulab.fluxmem.locomo import fluxmem_retrieve, heldout_refinement, ingest

    samples = load_locomo(tiny_locomo_file)
    rep = heldout_refinement(samples, enc, feedback_k=1)
    # three questions of categories 1-4: two get feedback (positions 0, 2), one is held out
    assert rep.counts == {0: 1, samples[0].qa[1].category: 1}
    held = samples[0].qa[1]
    mem = FluxMemory(enc)
    ingest(mem, samples[0])
    want = evidence_recall(fluxmem_retrieve(mem, held.question, samples[0].sample_id, 10), held.evidence, 5)
    assert rep.recall["before"][5][0] == pytest.approx(want)
    assert 0 <= rep.feedback_given <= 2 and "| after | 10 |" in rep.table()
