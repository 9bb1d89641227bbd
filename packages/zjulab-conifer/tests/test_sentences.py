"""Sentence and word counting against NLTK itself (punkt_tab English), and recorded counts."""

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


@pytest.fixture(scope="module")
def nltk_tab(tmp_path_factory):
    from .nltk_reference import install_punkt_tab

    install_punkt_tab(tmp_path_factory.mktemp("nltk_data"))
    import nltk

    return nltk


def test_agrees_with_nltk_sent_and_word_tokenize(nltk_tab, ifeval_path):
    texts = [c["text"] for g in ("hand", "natural", "adversarial") for c in REF[g]]
    texts += [json.loads(line)["prompt"] for line in ifeval_path.read_text().splitlines()]
    assert len(texts) == 1061
    assert [split_sentences(t) for t in texts] == [nltk_tab.sent_tokenize(t) for t in texts]
    assert [word_tokens(t) for t in texts] == [nltk_tab.word_tokenize(t) for t in texts]


def test_orthographic_evidence_decides_like_punkt_tab():
    # real punkt_tab splits here; the earlier hand-written splitter counted one sentence
    assert split_sentences("She got an A. Then she celebrated.") == ["She got an A.", "Then she celebrated."]


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
