"""Easy-to-hard grouping/sorting on the authors' stage samples, feedback conversations, export."""

import json

import pytest

from zjulab.conifer import (
    ConiferConfigError,
    ConiferInputError,
    build_conversations,
    easy_to_hard,
    external_feedback,
    internal_feedback,
    normalize_record,
    to_dataset,
)
from zjulab.conifer.training import dpo_pairs


def test_easy_to_hard_reproduces_the_shipped_multi_turn_file(conifer_samples):
    answers = json.loads((conifer_samples / "06_answer.json").read_text())
    expected = json.loads((conifer_samples / "06_multi_turn.json").read_text())
    convs = easy_to_hard(answers.values())
    assert [{"messages": c} for c in convs] == expected


def test_easy_to_hard_sorts_by_level_within_question_and_keeps_first_appearance():
    recs = [
        {"query": "B", "level": 3, "instruction": "b3", "answer": "x"},
        {"query": "A", "diff": "Difficulty 2", "question": "a2", "answer": "y"},
        {"query": "B", "level": 1, "instruction": "b1", "answer": "z"},
        {"query": "A", "level": 1, "instruction": "a1", "answer": "w"},
        {"query": "B", "level": 3, "instruction": "b3-bis", "answer": "v"},
    ]
    convs = easy_to_hard(recs)
    assert [[m["content"] for m in c if m["role"] == "user"] for c in convs] == [
        ["b1", "b3", "b3-bis"],
        ["a1", "a2"],
    ]
    assert easy_to_hard(recs, max_turns=1)[0] == [
        {"role": "user", "content": "b1"},
        {"role": "assistant", "content": "z"},
    ]


def test_orderings():
    recs = [{"query": "q", "level": lvl, "instruction": f"i{lvl}", "answer": f"a{lvl}"} for lvl in (3, 1, 2)]
    recs.append({"query": "r", "level": 1, "instruction": "r1", "answer": "ra"})
    level = build_conversations(recs, "level", include_feedback=False)
    assert [c[0]["content"] for c in level] == ["i1", "r1", "i2", "i3"]
    shuffled = build_conversations(recs, "shuffled", include_feedback=False, seed=1)
    assert sorted(c[0]["content"] for c in shuffled) == ["i1", "i2", "i3", "r1"]
    assert shuffled == build_conversations(recs, "shuffled", include_feedback=False, seed=1)
    with pytest.raises(ConiferConfigError, match="ordering"):
        build_conversations(recs, "random")


def test_feedback_conversations_match_the_shipped_shape(conifer_samples):
    sample = json.loads((conifer_samples / "06_answer_external.json").read_text())
    ((question, conv),) = sample.items()
    rec = {
        "query": "q",
        "level": 5,
        "instruction": question,
        "answer": conv[3]["content"],
        "weak_answer": conv[1]["content"],
        "follows": False,
        "feedback": "It misses GDPR.",
    }
    (out,) = external_feedback([rec])
    assert [m["role"] for m in out] == [m["role"] for m in conv]
    assert out[0]["content"] == conv[0]["content"] and out[1]["content"] == conv[1]["content"]
    assert out[2]["content"] == "It misses GDPR. Please give a revised version."
    assert external_feedback([dict(rec, follows=True)]) == []
    (inner,) = internal_feedback([dict(rec, process=["GDPR: covered in part 2"])])
    assert (
        inner[1]["content"]
        == "How this answer meets the requirements:\n- GDPR: covered in part 2\n\n" + rec["answer"]
    )
    (pair,) = dpo_pairs([rec])  # by fields: the record, not the four-turn shape
    assert (
        pair["chosen"][0]["content"] == rec["answer"] and pair["rejected"][0]["content"] == rec["weak_answer"]
    )


def test_normalize_errors():
    with pytest.raises(ConiferInputError, match="instruction and an answer"):
        normalize_record({"id": "x", "level": 1, "instruction": "i"})
    with pytest.raises(ConiferInputError, match="unreadable level 'hard'"):
        normalize_record({"id": "x", "diff": "hard", "instruction": "i", "answer": "a"})


@pytest.mark.parametrize(
    "record, match",
    [
        (["user", "assistant"], "record 0 is a list"),
        ({"id": "x", "level": True, "instruction": "i", "answer": "a"}, "level True"),
        ({"id": "x", "level": 0, "instruction": "i", "answer": "a"}, "level 0"),
        ({"id": "x", "level": 1, "instruction": ["i"], "answer": "a"}, "'instruction'.*list"),
        ({"id": "x", "level": 1, "instruction": "i", "answer": 3}, "'answer'.*int"),
        ({"id": "x", "level": 1, "instruction": "i", "answer": "a", "query": 7}, "'query'.*int"),
    ],
)
def test_records_are_taken_as_written_or_refused(record, match):
    # a list (a conversation, or the authors' external-feedback value) was an AttributeError, a
    # bool level was level 1, a list instruction became its repr in the training text
    with pytest.raises(ConiferInputError, match=match):
        easy_to_hard([record])


def test_dpo_pairs_refuse_a_weak_answer_that_is_not_text():
    rec = {"id": "x", "level": 1, "instruction": "i", "answer": "a", "follows": False, "feedback": "f"}
    with pytest.raises(ConiferInputError, match=r"'weak_answer'.*list"):
        dpo_pairs([dict(rec, weak_answer=["w"])])
    with pytest.raises(ConiferInputError, match=r"'feedback'.*dict"):
        dpo_pairs([dict(rec, weak_answer="w", feedback={"a": 1})])


def test_to_dataset_keeps_order_and_messages():
    convs = [
        [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(3)
    ]
    ds = to_dataset(convs)
    assert ds.column_names == ["messages"]
    assert [r["messages"][0]["content"] for r in ds] == ["u0", "u1", "u2"]


def test_a_format_number_variant_is_not_a_level_of_the_ladder():
    # the authors chain only the general levelled instructions (06_answer.json); a variant
    # (format/number constraints appended) trains on its own, in either mode
    recs = [
        {"query": "Q", "level": 1, "kind": "general", "instruction": "g1", "answer": "a1"},
        {"query": "Q", "level": 1, "kind": "format_number", "instruction": "g1 + fn", "answer": "f1"},
        {"query": "Q", "level": 2, "kind": "general", "instruction": "g2", "answer": "a2"},
        {"query": "Q", "level": 2, "kind": "format_number", "instruction": "g2 + fn", "answer": "f2"},
        {
            "query": "Q",
            "level": 2,
            "kind": "format_number",
            "instruction": "g2 + fn, process",
            "answer": "p2",
            "process_in_answer": True,
        },
    ]
    convs = build_conversations(recs, include_feedback=False)
    assert [[m["content"] for m in c if m["role"] == "user"] for c in convs] == [
        ["g1", "g2"],
        ["g1 + fn"],
        ["g2 + fn"],
    ]
    with_feedback = build_conversations(recs)
    assert [m["content"] for m in with_feedback[-1]] == ["g2 + fn, process", "p2"]
    # every answered record is in the export exactly once
    users = [c[0]["content"] for c in with_feedback[1:]] + ["g1", "g2"]
    assert sorted(users) == sorted(r["instruction"] for r in recs)
