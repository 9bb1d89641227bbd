"""Sign of SpanRelevance credit for every built-in checker: partial satisfaction is never blamed."""

import pytest
import torch

from zjulab.rtt import RelevanceQuery, Rubric, SpanRelevance, token_advantages
from zjulab.rtt.relevance import token_char_offsets
from zjulab.rtt.rubrics import CHECKERS

# (checker, kwargs, response, passes, satisfying substrings, violating substrings)
CASES = [
    ("punctuation:no_comma", {}, "red blue green", True, [], []),
    ("punctuation:no_comma", {}, "red, blue green", False, ["red", "blue"], [","]),
    ("change_case:english_lowercase", {}, "all lower here", True, [], []),
    ("change_case:english_lowercase", {}, "all Lower here", False, ["all", "here"], ["Lower"]),
    ("change_case:english_capital", {}, "ALL UPPER", True, [], []),
    ("change_case:english_capital", {}, "ALL upper", False, ["ALL"], ["upper"]),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "USA and UK",
        True,
        [],
        [],
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "USA and uk",
        False,
        ["USA"],
        [],
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 1, "capital_relation": "at most"},
        "USA and UK",
        False,
        [],
        ["USA", "UK"],
    ),
    ("keywords:existence", {"keywords": ["blue", "moon"]}, "The blue moon rose", True, [], []),
    ("keywords:existence", {"keywords": ["blue", "moon"]}, "The blue sea was calm", False, ["blue"], []),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "a good day", True, [], []),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "a bad day", False, ["good"], ["bad"]),
    (
        "keywords:frequency",
        {"keyword": "tea", "frequency": 3, "relation": "at least"},
        "tea tea tea",
        True,
        [],
        [],
    ),
    (
        "keywords:frequency",
        {"keyword": "tea", "frequency": 3, "relation": "at least"},
        "tea and more tea",
        False,
        ["tea"],
        [],
    ),
    (
        "keywords:frequency",
        {"keyword": "tea", "frequency": 2, "relation": "less than"},
        "tea tea tea",
        False,
        [],
        ["tea"],
    ),
    (
        "keywords:frequency",
        {"keyword": "tea", "frequency": 2, "relation": "exactly"},
        "tea once",
        False,
        ["tea"],
        [],
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        "zoo zebra",
        True,
        [],
        [],
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
        "zoo zebra",
        False,
        ["zoo", "zebra"],
        [],
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 1, "let_relation": "at most"},
        "zoo zebra",
        False,
        [],
        ["zoo", "zebra"],
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name] at [place]",
        True,
        [],
        [],
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name] hello",
        False,
        ["[name]"],
        [],
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi there.\nP.S. bye", True, [], []),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Hi there. bye",
        False,
        ["Hi", "bye"],
        [],
    ),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and *two*", True, [], []),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "*one* and two",
        False,
        ["*one*"],
        [],
    ),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", True, [], []),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n* b", False, ["* a", "* b"], []),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "* a\n* b", False, [], ["* a", "* b"]),
    ("detectable_format:title", {}, "<<Rain>> falls", True, [], []),
    ("detectable_format:title", {}, "Rain falls", False, ["Rain", "falls"], []),
    ("detectable_format:json_format", {}, '{"a": 1}', True, [], []),
    ("detectable_format:json_format", {}, "not json", False, [], ["not json"]),
    ("startend:end_checker", {"end_phrase": "the end"}, "and that is the end", True, [], []),
    (
        "startend:end_checker",
        {"end_phrase": "the end"},
        "and that is all folks",
        False,
        ["and"],
        ["all folks"],
    ),
    ("startend:quotation", {}, '"quoted text"', True, [], []),
    ("startend:quotation", {}, '"quoted text', False, ['"'], ["text"]),
    (
        "length_constraints:number_words",
        {"num_words": 3, "relation": "at least"},
        "one two three",
        True,
        [],
        [],
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "one two three",
        False,
        [],
        [],
    ),
    (
        "length_constraints:number_words",
        {"num_words": 2, "relation": "at most"},
        "one two three",
        False,
        [],
        ["one two three"],
    ),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "first\n***\nsecond", True, [], []),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 3},
        "first\n***\nsecond",
        False,
        ["***", "first"],
        [],
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 1},
        "first\n***\nsecond",
        False,
        ["first"],
        ["\n***\n"],
    ),
    ("detectable_format:constrained_response", {}, "My answer is yes.", True, [], []),
    ("detectable_format:constrained_response", {}, "Yes I think so", False, ["Yes"], []),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Tell me a joke"},
        "Tell me a joke. Why?",
        True,
        [],
        [],
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Tell me a joke"},
        "Tell me a fact. Why?",
        False,
        ["Tell"],
        ["fact"],
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1 a Section 2 b",
        True,
        [],
        [],
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 3},
        "Section 1 a Section 2 b",
        False,
        ["Section 1", "Section 2"],
        [],
    ),
    ("combination:two_responses", {}, "first one ****** second one", True, [], []),
    ("combination:two_responses", {}, "only one answer", False, ["only"], []),
    ("combination:two_responses", {}, "a ****** b ****** c", False, ["a"], ["******"]),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "first\n\nthen more",
        True,
        [],
        [],
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "then"},
        "first\n\nthen more",
        False,
        ["then"],
        [],
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "first\n\nnow more",
        False,
        ["first"],
        ["now"],
    ),
]


def test_every_builtin_checker_is_covered():
    assert {c[0] for c in CASES} == set(CHECKERS)
    # and each one with a failing response
    assert {c[0] for c in CASES if not c[3]} == set(CHECKERS)


def _overlapping(offsets, text, pieces):
    out = set()
    for piece in pieces:
        start = 0
        while (at := text.find(piece, start)) >= 0:
            out |= {j for j, (a, b) in enumerate(offsets) if b > a and a < at + len(piece) and b > at}
            start = at + 1
    return out


@pytest.mark.parametrize("checker,kwargs,text,passes,satisfying,violating", CASES)
def test_span_relevance_signs(tiny_tokenizer, checker, kwargs, text, passes, satisfying, violating):
    rubric = Rubric.check(checker, **kwargs)
    result = rubric.evaluate(text)
    assert result.passed is passes
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = token_char_offsets(ids, tiny_tokenizer)
    assert decoded == text
    w = SpanRelevance().token_relevance([RelevanceQuery(rubric, ids, text)], tiny_tokenizer)[0]
    s = 1.0 if passes else -1.0
    x = w * s  # the signed credit this rubric gives each token
    if passes:
        assert (x >= 0).all()  # a passing response: no token is blamed by this rubric
        if result.spans:
            assert x.max() > 0
        return
    good = _overlapping(offsets, text, satisfying)
    bad = _overlapping(offsets, text, violating)
    assert all(x[j] >= 0 for j in good - bad), "a token satisfying part of the constraint is blamed"
    blamed = {j for j in range(len(ids)) if x[j] < 0}
    assert blamed <= bad  # only tokens of the violating text are blamed
    assert bool(blamed) == bool(violating)  # and a violation is blamed somewhere
    if not violating:
        assert (x == 0).all()  # a missing-content failure gives no token credit
    # after the paper's normalisation no satisfying token ends up negative either
    a = token_advantages(x.abs().view(1, 1, -1), torch.tensor([[s]]), torch.ones(1, len(ids)))
    assert all(a[0, j] >= 0 for j in good - bad)


def test_absent_content_can_be_put_on_the_end(tiny_tokenizer):
    rubric = Rubric.check("keywords:existence", keywords=["blue", "moon"])
    text = "The blue sea was calm"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    w = SpanRelevance(absent="end").token_relevance([RelevanceQuery(rubric, ids, text)], tiny_tokenizer)[0]
    _, offsets = token_char_offsets(ids, tiny_tokenizer)
    last = max(j for j, (a, b) in enumerate(offsets) if b > a and text[a:b].strip())
    assert w.nonzero().flatten().tolist() == [last]
    assert "calm".endswith(text[offsets[last][0] : offsets[last][1]].strip())
