"""Every IFEval checker on hand-written positive and negative responses, strict and loose."""

import json
import re

import pytest

from zjulab.conifer import (
    CheckerRegistry,
    ConiferConfigError,
    ConiferInputError,
    InstructionArgumentError,
    PipelineConfig,
    UnknownInstructionError,
    default_registry,
    loose_variants,
)

REG = default_registry()

# (instruction id, kwargs, response, strict, loose)
CASES = [
    ("keywords:existence", {"keywords": ["river", "bridge"]}, "The River runs under the bridge.", True, True),
    ("keywords:existence", {"keywords": ["river", "bridge"]}, "The river is wide.", False, False),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 3, "relation": "at least"},
        "Cat, cat and a category.",
        True,
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 3, "relation": "at least"},
        "One cat, two cats.",
        False,
        False,
    ),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "less than"},
        "One cat only.",
        True,
        True,
    ),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A badge is fine.", True, True),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "That was BAD.", False, False),
    # loose drops the first line, which holds the forbidden word
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["bad"]},
        "Not bad!\nEverything else is fine.",
        False,
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        "Zebra zone.",
        True,
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
        "Zebra zone.",
        False,
        False,
    ),
    (
        "language:response_language",
        {"language": "de"},
        "Das ist eine kurze Antwort auf Deutsch über das Wetter.",
        True,
        True,
    ),
    (
        "language:response_language",
        {"language": "de"},
        "This is a short answer in English about the weather.",
        False,
        False,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "One. Two.",
        True,
        True,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "at least"},
        "Dr. Smith came. He sat.",
        False,
        False,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 2, "relation": "less than"},
        "Intro line.\nOne sentence here",
        False,
        True,
    ),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\nSecond.", True, True),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        "First.\n***\n\n***\nThird.",
        False,
        False,
    ),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n***\nTwo.", False, False),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "less than"},
        "Four words are here.",
        True,
        True,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        "Four words are here.",
        False,
        False,
    ),
    # loose also tries the response without its last line: "Sure thing:" has 2 words
    (
        "length_constraints:number_words",
        {"num_words": 4, "relation": "less than"},
        "Sure thing:\nsix words stay after it",
        False,
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        'Hi there.\n\n"Then, we go.',
        True,
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        "Hi there.\n\nNow we go.",
        False,
        False,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], see you at [place].",
        True,
        True,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Dear [name], see you soon.",
        False,
        False,
    ),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\nP.S. bring snacks", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP. P. S. more", True, True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body without a note.", False, False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two", True, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**bold**\n* one", False, False),
    # loose removes the trailing line that holds a third bullet
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n- three", False, True),
    ("detectable_format:constrained_response", {}, "Well... My answer is no.", True, True),
    ("detectable_format:constrained_response", {}, "My answer is nope.", False, False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True, True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and * *", False, False),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nA\nSection 2\nB",
        True,
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 3},
        "Section 1\nA\nSection 2\nB",
        False,
        False,
    ),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True, True),
    ("detectable_format:json_format", {}, "{'a': 1}", False, False),
    # loose drops the prose lines around the JSON
    ("detectable_format:json_format", {}, 'Here you go:\n{"a": 1}\nEnjoy!', False, True),
    ("detectable_format:title", {}, "<<My Title>>\nText", True, True),
    ("detectable_format:title", {}, "<< >>\nText", False, False),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True, True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False, False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", True, True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Hi! Say hi.", False, False),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        'Done. Any other questions?"',
        True,
        True,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Any other questions? Done.",
        False,
        False,
    ),
    # loose removes the last line after the phrase
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Done. Any other questions?\n(end)",
        False,
        True,
    ),
    ("startend:quotation", {}, '  "Quoted answer."  ', True, True),
    ("startend:quotation", {}, '"Half quoted.', False, False),
    # loose strips the asterisks around the quotes
    ("startend:quotation", {}, '*"Quoted with emphasis."*', False, True),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "at least"},
        "NASA and ESA DON'T wait.",
        True,
        True,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "less than"},
        "NASA and ESA DON'T wait.",
        False,
        False,
    ),
    (
        "change_case:english_capital",
        {},
        "THIS ANSWER IS WRITTEN IN CAPITAL LETTERS FOR THE READER.",
        True,
        True,
    ),
    ("change_case:english_capital", {}, "This answer is written in mixed case letters.", False, False),
    (
        "change_case:english_lowercase",
        {},
        "this answer is written in lowercase letters for the reader.",
        True,
        True,
    ),
    ("change_case:english_lowercase", {}, "This answer has One capital letter in it.", False, False),
    # loose drops the capitalised first line
    (
        "change_case:english_lowercase",
        {},
        "Answer:\nthis answer is written in lowercase letters for the reader.",
        False,
        True,
    ),
    ("punctuation:no_comma", {}, "No commas here at all.", True, True),
    ("punctuation:no_comma", {}, "One, two.", False, False),
]


@pytest.mark.parametrize(("iid", "kwargs", "response", "strict", "loose"), CASES)
def test_checker_strict_and_loose(iid, kwargs, response, strict, loose):
    assert REG.check(iid, response, kwargs, mode="strict") is strict
    assert REG.check(iid, response, kwargs, mode="loose") is loose


def test_every_registered_type_has_positive_and_negative_cases():
    ids = set(REG.ids())
    assert len(ids) == 25
    pos = {c[0] for c in CASES if c[3]}
    neg = {c[0] for c in CASES if not c[3]}
    assert pos == ids and neg == ids


def test_empty_response_never_follows():
    assert REG.check("punctuation:no_comma", "   ", mode="strict") is False
    assert REG.check("punctuation:no_comma", "", mode="loose") is False


def test_none_kwargs_are_ignored_as_in_the_hub_copy():
    kw = {"num_words": 3, "relation": "at least", "keywords": None}
    assert REG.check("length_constraints:number_words", "one two three", kw) is True


def test_loose_variants_are_the_eight_of_ifeval():
    v = loose_variants("a*\nb\nc*")
    assert v == ["a*\nb\nc*", "a\nb\nc", "b\nc*", "a*\nb", "b", "b\nc", "a\nb", "b"]


def test_repeat_prompt_gets_prompt_argument_from_kwargs():
    assert REG.check("combination:repeat_prompt", "Tell me. Sure.", {"prompt_to_repeat": "Tell me."})


def test_errors_name_the_problem():
    with pytest.raises(UnknownInstructionError, match="no:such"):
        REG.check("no:such", "x")
    with pytest.raises(InstructionArgumentError, match=r"missing argument.*num_words"):
        REG.check("length_constraints:number_words", "x", {"relation": "at least"})
    with pytest.raises(InstructionArgumentError, match=r"unexpected argument.*colour"):
        REG.check("punctuation:no_comma", "x", {"colour": "red"})
    with pytest.raises(InstructionArgumentError, match="relation"):
        REG.check("length_constraints:number_words", "x y", {"num_words": 1, "relation": "about"})
    with pytest.raises(ConiferConfigError, match="mode"):
        REG.check("punctuation:no_comma", "x", mode="lenient")
    with pytest.raises(InstructionArgumentError, match="string"):
        REG.check("punctuation:no_comma", None)


def test_registry_is_extensible_and_guards_duplicates():
    reg = default_registry()

    @reg.register("custom:starts_with", params=["word"], description="Start with {word}.")
    def starts_with(response, word):
        return response.lstrip().lower().startswith(word.lower())

    assert reg.check("custom:starts_with", "Hello there", {"word": "hello"})
    assert not reg.check("custom:starts_with", "Oh, hello", {"word": "hello"}, mode="strict")
    assert reg.check("custom:starts_with", "Oh\nhello", {"word": "hello"}, mode="loose")
    with pytest.raises(ConiferConfigError, match="already registered"):
        reg.register("custom:starts_with", starts_with, params=["word"])
    reg.register("custom:starts_with", lambda r, word: True, params=["word"], replace=True)
    assert reg.check("custom:starts_with", "x", {"word": "y"})
    # the default registry is untouched
    assert "custom:starts_with" not in default_registry()
    assert isinstance(reg.copy(), CheckerRegistry) and len(reg.copy()) == 26


# ------------------------------------------------------------------ argument validation

_GOOD = {
    "keywords": ["dog"],
    "keyword": "dog",
    "frequency": 2,
    "relation": "at least",
    "forbidden_words": ["dog"],
    "letter": "a",
    "let_frequency": 2,
    "let_relation": "less than",
    "language": "en",
    "num_sentences": 2,
    "num_paragraphs": 2,
    "num_words": 10,
    "nth_paragraph": 1,
    "first_word": "hello",
    "num_placeholders": 1,
    "postscript_marker": "P.S.",
    "num_bullets": 2,
    "num_highlights": 1,
    "section_spliter": "Section",
    "num_sections": 2,
    "prompt_to_repeat": "Say hi",
    "end_phrase": "Bye.",
    "capital_frequency": 2,
    "capital_relation": "at least",
}


def _bad_values(validator_name):
    return {
        "_words": ["dog", [], [""], [3]],
        "_text": [3, "", ["x"]],
        "_word": ["two words", 3],
        "_relation": ["more than", "at_least", 1],
        "_letter": ["ab", 3, ""],
        "_language": ["English", 3],
    }.get(validator_name, ["3", 0, -1, 2.5, True])


def _typed_cases():
    reg = default_registry()
    for iid in reg.ids():
        spec = reg.get(iid)
        for key, validator in spec.types.items():
            name = getattr(validator, "__qualname__", "").split(".")[0]
            for bad in _bad_values(name):
                yield iid, key, bad


@pytest.mark.parametrize(("iid", "key", "bad"), list(_typed_cases()))
def test_every_checker_refuses_wrongly_typed_arguments(iid, key, bad):
    from zjulab.conifer import ConiferInputError

    reg = default_registry()
    spec = reg.get(iid)
    kwargs = {k: _GOOD[k] for k in spec.params}
    assert reg.validate(iid, kwargs) == kwargs  # the good arguments pass
    kwargs[key] = bad
    with pytest.raises(ConiferInputError, match=rf"{re.escape(iid)}: argument '{key}'"):
        reg.check(iid, "Some response.", kwargs)


def test_every_typed_checker_is_covered():
    reg = default_registry()
    untyped = [i for i in reg.ids() if set(reg.get(i).params) - set(reg.get(i).types) - {"prompt"}]
    assert untyped == []


def test_a_language_the_detector_never_answers_is_refused():
    # "xx" (or "zh", which the detector reports as zh-cn/zh-tw) could never be met: it was
    # checked and always failed
    reg = default_registry()
    for code in ("xx", "zh"):
        with pytest.raises(ConiferInputError, match=r"language:response_language: argument 'language'"):
            reg.check("language:response_language", "Bonjour tout le monde", {"language": code})
    assert reg.check(
        "language:response_language", "Bonjour tout le monde, comment allez-vous ?", {"language": "fr"}
    )
    with pytest.raises(ConiferConfigError, match=r"languages: \['english'\] never detected"):
        PipelineConfig(languages=["english"])


def test_keywords_as_a_string_is_refused_not_split_into_letters():
    reg = default_registry()
    with pytest.raises(InstructionArgumentError, match="keywords:existence: argument 'keywords'"):
        reg.check("keywords:existence", "I like good food", {"keywords": "dog"})
    assert not reg.check("keywords:existence", "I like good food", {"keywords": ["dog"]})


def test_nth_paragraph_beyond_the_paragraph_count_is_refused():
    reg = default_registry()
    with pytest.raises(InstructionArgumentError, match="'nth_paragraph': 3 is more than num_paragraphs=2"):
        reg.validate(
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
        )


def test_all_ifeval_arguments_validate(ifeval_path):
    reg = default_registry()
    n = 0
    for line in ifeval_path.read_text().splitlines():
        row = json.loads(line)
        for iid, kw in zip(row["instruction_id_list"], row["kwargs"]):
            reg.validate(iid, kw, prompt=row["prompt"])
            n += 1
    assert n == 834
