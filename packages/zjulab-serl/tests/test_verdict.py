import pytest

from zjulab.serl import parse_verdict, parse_verdicts

STRICT_CASES = [
    ("\\boxed{1}", 1),
    ("Answer 2 covers both questions. \\boxed{2}", 2),
    ("\\boxed{\\text{2}}", 2),
    ("\\boxed{\\textbf{Answer 1}}", 1),
    ("The better one: \\boxed{ 1 }.", 1),
    ("\\\\boxed{2}", 2),  # JSON-escaped backslash
    ("$\\boxed{B}$", 2),
    ("\\boxed{1} ... on reflection the second is right: \\boxed{2}", 2),  # the last box decides
    ("<think>maybe \\boxed{1}</think>\n\nFinal: \\boxed{2}", 2),  # reasoning is ignored
    ("<think>maybe \\boxed{1}</think>\n\nI cannot decide.", None),
    ("<think>still thinking \\boxed{2}", 2),  # no closing marker: the whole text counts
    ("\\boxed{3}", None),
    ("\\boxed{1 or 2}", None),
    ("\\boxed{}", None),
    ("\\boxed{1", None),  # unclosed
    ("Answer 1 is better.", None),  # not the requested format
    ("2", None),
    ("", None),
]

LENIENT_CASES = [
    ("Answer 1 is better.", 1),
    ("I prefer response 2 because it is concrete.", 2),
    ('{"winner": 2, "reason": "more precise"}', 2),
    ('```json\n{"preference": "Answer 1"}\n```', 1),
    ("boxed{2}", 2),
    ("[[A]]", 1),
    ("Verdict: 2", 2),
    ("Response 1 is weaker; answer 2 is clearly better", 2),  # the last statement wins
    (" 2. ", 2),
    ("1. Study in short blocks", 1),  # a leading number answers "reply with 1 or 2"
    ("(2) because it is concrete", 2),
    ("12 reasons", None),
    ("1.5 points each", None),
    ("\\boxed{3}", None),  # a box always decides, even when lenient
    ("Both are fine.", None),
    ('{"winner": true}', None),
]


@pytest.mark.parametrize("text,expected", STRICT_CASES)
def test_strict(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text,expected", LENIENT_CASES)
def test_lenient(text, expected):
    assert parse_verdict(text, lenient=True) == expected


def test_reasoning_marker_option_and_types():
    text = "<think>\\boxed{1}</think> nothing"
    assert parse_verdict(text) is None
    assert parse_verdict(text, reasoning_end=None) == 1
    assert parse_verdict(None) is None  # type: ignore[arg-type]
    assert parse_verdicts(["\\boxed{1}", "x", "\\boxed{2}"]) == [1, None, 2]
