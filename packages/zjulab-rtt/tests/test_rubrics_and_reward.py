"""Verifiable checkers, rubric parsing, the rubric reward and its cached judge."""

import json

import pytest
import torch

from zjulab.common.errors import InputError, NotFoundError
from zjulab.rtt import (
    RTTConfigError,
    Rubric,
    RubricError,
    RubricReward,
    SpanRelevance,
    UnknownCheckerError,
    parse_rubrics,
    run_check,
)
from zjulab.rtt.relevance import RelevanceQuery


@pytest.mark.parametrize(
    ("name", "kwargs", "text", "passed", "spans"),
    [
        ("punctuation:no_comma", {}, "a, b, c", False, [(1, 2), (4, 5)]),
        ("punctuation:no_comma", {}, "a b c", True, []),
        ("keywords:existence", {"keywords": ["blue", "sea"]}, "The Blue sea.", True, [(4, 8), (9, 12)]),
        ("keywords:existence", {"keywords": ["blue", "moon"]}, "The Blue sea.", False, [(4, 8)]),
        ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "not bad, badly", False, [(4, 7)]),
        (
            "keywords:frequency",
            {"keyword": "ha", "frequency": 2, "relation": "at least"},
            "ha ha",
            True,
            [(0, 2), (3, 5)],
        ),
        (
            "keywords:letter_frequency",
            {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
            "zoo",
            True,
            [(0, 1)],
        ),
        ("change_case:english_lowercase", {}, "all lower", True, []),
        ("change_case:english_lowercase", {}, "not Lower", False, [(4, 9)]),
        ("change_case:english_capital", {}, "ALL CAPS", True, []),
        (
            "detectable_content:number_placeholders",
            {"num_placeholders": 2},
            "[a] and [b]",
            True,
            [(0, 3), (8, 11)],
        ),
        ("detectable_format:title", {}, "<<Title>>\nbody", True, [(0, 9)]),
        (
            "detectable_format:number_highlighted_sections",
            {"num_highlights": 2},
            "*one* and *two*",
            True,
            [(0, 5), (10, 15)],
        ),
        (
            "detectable_format:number_bullet_lists",
            {"num_bullets": 2},
            "* a\n* b\ntext",
            True,
            [(0, 3), (4, 7)],
        ),
        ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True, [(0, 20)]),
        ("detectable_format:json_format", {}, "{a: 1}", False, [(0, 6)]),
        ("startend:end_checker", {"end_phrase": "Any questions?"}, "Done. Any questions?", True, [(6, 20)]),
        ("startend:quotation", {}, '"quoted"', True, [(0, 1), (7, 8)]),
        (
            "length_constraints:number_words",
            {"num_words": 3, "relation": "less than"},
            "one two",
            True,
            [(0, 7)],
        ),
        ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "p1\n***\np2", True, [(2, 7)]),
        ("combination:two_responses", {}, "one\n******\ntwo", True, [(4, 10)]),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", True, [(3, 12)]),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
            "First part.\n\nThen, more.",
            True,
            [(13, 17)],
        ),
        (  # IFEval reads the first word up to . , ? ! ' or ": markdown emphasis is part of it
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
            "First part.\n\n*Then* more.",
            False,
            [(13, 19)],
        ),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "then"},
            "First part.\n\nThen more.",
            False,
            [(13, 17)],
        ),
    ],
)
def test_checkers(name, kwargs, text, passed, spans):
    res = run_check(name, text, kwargs)
    assert res.passed is passed
    assert list(res.spans) == spans


def test_rubric_construction_and_round_trip():
    r = Rubric.check("keywords:existence", keywords=["blue"])
    assert r.text == "Include the keywords: blue."
    assert Rubric.from_obj(r.to_json()) == r
    assert Rubric.from_obj({"checker": "punctuation:no_comma", "kwargs": {"unused": None}}).kwargs == {}
    assert parse_rubrics(json.dumps([r.to_dict(), "Be polite."]))[1] == Rubric.judge("Be polite.")
    with pytest.raises(UnknownCheckerError, match="no checker named 'nope'") as info:
        Rubric.check("nope")
    assert isinstance(info.value, NotFoundError)
    with pytest.raises(RubricError, match="non-empty text"):
        Rubric.judge("  ")
    with pytest.raises(RubricError, match="does not accept"):
        run_check("keywords:existence", "x", {"words": ["a"]})
    with pytest.raises(InputError, match="unknown relation"):
        run_check("keywords:frequency", "a", {"keyword": "a", "frequency": 1, "relation": "about"})


def test_reward_all_or_nothing_and_rate():
    rubrics = [Rubric.check("punctuation:no_comma"), Rubric.check("keywords:existence", keywords=["sea"])]
    texts = ["the sea, blue", "the sea is blue", "no water"]
    batch = RubricReward().score(["p"] * 3, texts, [rubrics] * 3)
    assert batch.scores.tolist() == [[-1.0, 1.0], [1.0, 1.0], [1.0, -1.0]]
    assert RubricReward(aggregate="all").rewards(batch) == [0.0, 1.0, 0.0]
    assert RubricReward(aggregate="rate").rewards(batch) == [0.5, 1.0, 0.5]


def test_reward_pads_uneven_rubric_lists_and_reads_conversations():
    reward = RubricReward(aggregate="rate")
    out = reward(
        prompts=[[{"role": "user", "content": "q"}]] * 2,
        completions=[[{"role": "assistant", "content": "a, b"}], [{"role": "assistant", "content": "a b"}]],
        rubrics=[[Rubric.check("punctuation:no_comma").to_json()], []],
    )
    assert out == [0.0, 0.0]
    assert reward.last.mask.tolist() == [[1.0], [0.0]]
    with pytest.raises(RubricError, match="no 'rubrics' column"):
        reward(prompts=["q"], completions=["a"])


def test_judge_is_batched_and_cached(scripted_chat):
    chat = scripted_chat(lambda conv: "YES, it does." if "polite" in conv[-1]["content"] else "no")
    reward = RubricReward(chat, judge_batch_size=2)
    rubrics = [
        [Rubric.judge("Be polite."), Rubric.judge("Mention Paris."), Rubric.check("punctuation:no_comma")]
    ] * 3
    texts = ["hello there", "hello there", "bonjour"]
    batch = reward.score(["Greet me"] * 3, texts, rubrics)
    assert batch.scores.tolist() == [[1.0, -1.0, 1.0]] * 3
    assert reward.judge_calls == 4  # 2 distinct responses x 2 judge rubrics; the repeat is shared
    assert len(chat.sampling) == 2  # batches of 2
    reward.score(["Greet me"], ["hello there"], rubrics[:1])
    assert reward.judge_calls == 4 and reward.cache_hits == 2
    assert "Criterion: Be polite." in chat.calls[0][-1]["content"]
    assert reward.parse_verdict("Hmm.") == -1.0 and reward.judge_unreadable == 1


JUDGE_ANSWERS = [
    # (answer, verdict): reasoning models (Qwen3 thinking, R1), instruction models, cut-off answers
    ("YES", 1.0),
    ("NO", -1.0),
    ("Yes, it does.", 1.0),
    ("**No**. The response uses a comma.", -1.0),
    ("Answer: YES", 1.0),
    ("Verdict: no", -1.0),
    ("\\boxed{YES}", 1.0),
    ("The response is polite and greets the user, so the answer is YES.", 1.0),
    ("<think>\nThe criterion asks for politeness. No rude words. Yes, polite.\n</think>\n\nYES", 1.0),
    ("<think>\nIs it polite? Yes... but wait, it never greets.\n</think>\n\nNO", -1.0),
    ("<think>\n\n</think>\n\nNo", -1.0),
    ("The criterion is met? Let me think. yes\n</think>\n\nNO", -1.0),  # R1: <think> opened by the template
    ("<think>\nThe answer would be YES if the response greets the user, NO if", None),  # cut off
    ("<think>\nYes", None),
    ("Hmm.", None),
    ("", None),
]


@pytest.mark.parametrize("answer,verdict", JUDGE_ANSWERS)
def test_judge_verdicts_of_reasoning_and_plain_models(answer, verdict):
    assert RubricReward.read_verdict(answer) == verdict
    reward = RubricReward()
    assert reward.parse_verdict(answer) == (verdict if verdict is not None else -1.0)
    assert reward.judge_unreadable == (verdict is None)


def test_default_judge_length_leaves_room_for_reasoning(scripted_chat):
    chat = scripted_chat(lambda conv: "<think>\nlong reasoning\n</think>\n\nYES")
    reward = RubricReward(chat)
    assert reward.judge_max_new_tokens >= 512
    batch = reward.score(["p"], ["r"], [[Rubric.judge("Be kind.")]])
    assert batch.scores.tolist() == [[1.0]]
    assert chat.sampling[0]["max_new_tokens"] == reward.judge_max_new_tokens


def test_judge_rubric_without_judge_and_bad_config():
    with pytest.raises(RubricError, match="needs an LLM judge"):
        RubricReward().score(["p"], ["r"], [[Rubric.judge("Be kind.")]])
    with pytest.raises(RTTConfigError, match="aggregate"):
        RubricReward(aggregate="mean")  # type: ignore[arg-type]
    with pytest.raises(RubricError, match="1 prompts, 2 responses"):
        RubricReward().score(["p"], ["a", "b"], [[], []])


def test_span_relevance_marks_checker_spans(tiny_tokenizer):
    ids = tiny_tokenizer("no, yes", add_special_tokens=False)["input_ids"]
    rel = SpanRelevance().token_relevance(
        [
            RelevanceQuery(Rubric.check("punctuation:no_comma"), ids, "no, yes"),
            RelevanceQuery(Rubric.check("keywords:existence", keywords=["yes"]), ids, "no, yes"),
            RelevanceQuery(Rubric.judge("Be kind."), ids, "no, yes"),
        ],
        tiny_tokenizer,
    )
    assert [t.tolist() for t in rel] == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert isinstance(rel[0], torch.Tensor)


def test_routed_relevance_sends_each_kind_to_its_source(tiny_tokenizer):
    from zjulab.rtt import RoutedRelevance, UniformRelevance

    class Recorder(UniformRelevance):
        def __init__(self):
            super().__init__(0.5)
            self.seen = []

        def token_relevance(self, queries, tokenizer):
            self.seen.extend(q.rubric.text for q in queries)
            return super().token_relevance(queries, tokenizer)

    judged = Recorder()
    ids = tiny_tokenizer("no, yes", add_special_tokens=False)["input_ids"]
    rel = RoutedRelevance(judged).token_relevance(
        [
            RelevanceQuery(Rubric.judge("Be kind."), ids, "no, yes"),
            RelevanceQuery(Rubric.check("punctuation:no_comma"), ids, "no, yes"),
        ],
        tiny_tokenizer,
    )
    assert judged.seen == ["Be kind."]
    assert [t.tolist() for t in rel] == [[0.5, 0.5, 0.5], [0.0, 1.0, 0.0]]


def test_unreadable_judge_answers_are_not_cached(scripted_chat):
    answers = iter(["<think>\nstill thinking", "YES"])
    chat = scripted_chat(lambda conv: next(answers))
    reward = RubricReward(chat)
    rubric = [[Rubric.judge("Be kind.")]]
    assert reward.score(["p"], ["r"], rubric).scores.tolist() == [[-1.0]]  # cut off: scored NO
    assert reward.score(["p"], ["r"], rubric).scores.tolist() == [[1.0]]  # asked again, answered
    assert reward.judge_calls == 2 and reward.judge_unreadable == 1
    assert reward.score(["p"], ["r"], rubric).scores.tolist() == [[1.0]]  # a readable answer is kept
    assert reward.judge_calls == 2 and reward.cache_hits == 1
