"""The offline sentence splitter against NLTK Punkt's recorded counts, and word counting."""

import json

import pytest

from zjulab.conifer import SentenceSplitter, count_sentences, count_words, split_sentences
from zjulab.conifer.sentences import word_tokens

REF = json.loads(
    (__import__("pathlib").Path(__file__).parent / "data" / "punkt_reference_counts.json").read_text()
)


@pytest.mark.parametrize("group", ["hand", "natural", "adversarial"])
def test_counts_agree_with_punkt(group):
    cases = REF[group]
    mismatches = [
        (c["text"], c["count"], count_sentences(c["text"]))
        for c in cases
        if count_sentences(c["text"]) != c["count"]
    ]
    assert not mismatches, mismatches[:5]
    assert len(cases) >= 20


def test_counts_agree_with_punkt_on_every_ifeval_prompt(ifeval_path):
    rows = [json.loads(line) for line in ifeval_path.read_text().splitlines()]
    expected = REF["ifeval_prompts"]
    assert len(rows) == 541
    bad = [r["key"] for r in rows if count_sentences(r["prompt"]) != expected[str(r["key"])]]
    assert bad == []


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("The U.S. economy grew. It was 3.5 percent.", ["The U.S. economy grew.", "It was 3.5 percent."]),
        ("Wait... then it changed.", ["Wait... then it changed."]),
        ("Wait... The plan changed.", ["Wait...", "The plan changed."]),
        ("(This is quoted.) Next sentence.", ["(This is quoted.)", "Next sentence."]),
        ("* one\n* two\n* three", ["* one\n* two\n* three"]),
        ("Is it? Yes! Fine.", ["Is it?", "Yes!", "Fine."]),
        ("", []),
    ],
)
def test_split_by_hand(text, sentences):
    assert split_sentences(text) == sentences


def test_custom_abbreviations():
    splitter = SentenceSplitter(abbreviations={"fig"})
    assert splitter.count("See Fig. 3 for details.") == 1
    assert count_sentences("See Fig. 3 for details.") == 2  # not a Punkt abbreviation


def test_count_words_is_ifevals_regex():
    assert count_words("Hello, world! It's 3.5 km-long.") == 8  # Hello world It s 3 5 km long


def test_word_tokens_split_contractions_keep_hyphens():
    assert word_tokens("I DON'T know, IT'S STATE-OF-THE-ART (NASA).") == [
        "I",
        "DO",
        "N'T",
        "know",
        ",",
        "IT",
        "'S",
        "STATE-OF-THE-ART",
        "(",
        "NASA",
        ")",
        ".",
    ]
