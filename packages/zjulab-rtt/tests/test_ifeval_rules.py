"""The checkers give IFEval's strict verdicts (google-research instruction_following_eval, as
shipped in the authors' repository TURLEing/Rubrics-To-Tokens 8e2dd82, Benchmark/).

Each expected value below is what IFEval's ``check_following`` returns for the case (run once
against that code; the language check of the two change_case rules, which this library does not
perform, held). The old rules of this library disagreed on 14 of these 23 cases.
"""

import pytest

from zjulab.rtt import run_check

LOWER = "change_case:english_lowercase"
UPPER = "change_case:english_capital"
CAPS = "change_case:capital_word_frequency"
BULLETS = "detectable_format:number_bullet_lists"
TWO = "combination:two_responses"
PARAS = "length_constraints:number_paragraphs"
NTH = "length_constraints:nth_paragraph_first_word"
THEN2 = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}

CASES = [
    # str.islower / str.isupper: a response without any cased letter fails (an empty one too)
    (LOWER, {}, "", False),
    (LOWER, {}, '"- 12', False),
    (LOWER, {}, "all lower", True),
    (LOWER, {}, "not Lower", False),
    (UPPER, {}, "", False),
    (UPPER, {}, "123 !", False),
    (UPPER, {}, "ALL UPPER 2", True),
    # every word token that is str.isupper() counts: "I", "U.S.", the two halves of "DON'T", "A1"
    (CAPS, {"capital_frequency": 2, "capital_relation": "at least"}, "I saw NASA today", True),
    (CAPS, {"capital_frequency": 3, "capital_relation": "at least"}, "DON'T STOP now", True),
    (CAPS, {"capital_frequency": 2, "capital_relation": "at least"}, "The U.S. and UK", True),
    (CAPS, {"capital_frequency": 1, "capital_relation": "less than"}, "A1 test", False),
    # a line starting with "-" (any) or with "*" not followed by "*"
    (BULLETS, {"num_bullets": 2}, "- a\n-- b", True),
    (BULLETS, {"num_bullets": 1}, "* a\n** b", True),
    # an empty piece is allowed before the first or after the last separator only
    (TWO, {}, "A ****** B ******", True),
    (TWO, {}, "****** A ****** B", True),
    (TWO, {}, "A ****** ****** B", False),
    (TWO, {}, "A ****** A", False),
    (PARAS, {"num_paragraphs": 2}, "***\nA\n***\nB", True),
    (PARAS, {"num_paragraphs": 2}, "A *** B ***", True),
    (PARAS, {"num_paragraphs": 2}, "A *** *** B", False),
    # the n-th piece between blank lines, empty pieces included; the word ends at . , ? ! ' or "
    (NTH, THEN2, "\n\nFirst\n\nThen more", False),
    (NTH, THEN2, 'First\n\n"Then," he said', True),
    (NTH, THEN2, "First\n\n*Then* more.", False),
]


@pytest.mark.parametrize("checker,kwargs,text,verdict", CASES)
def test_checker_gives_the_ifeval_verdict(checker, kwargs, text, verdict):
    assert run_check(checker, text, kwargs).passed is verdict


def test_failures_blame_the_right_characters():
    # an empty response fails "all lowercase" without blaming anything (nothing is there)
    assert run_check(LOWER, "").failure_spans == ()
    res = run_check(UPPER, "ALL upper")
    assert [("ALL upper")[a:b] for a, b in res.failure_spans] == ["upper"]
    res = run_check(TWO, "A ****** ****** B")  # adjacent separators are at fault
    assert [("A ****** ****** B")[a:b] for a, b in res.failure_spans] == ["******", "******"]
    assert run_check(TWO, "only one").failure_spans == ()  # a missing answer is not in the text
    res = run_check(NTH, "First\n\n*Then* more.", THEN2)
    assert [("First\n\n*Then* more.")[a:b] for a, b in res.failure_spans] == ["*Then*"]
