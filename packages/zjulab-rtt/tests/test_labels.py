"""Character spans -> token labels through tokenizer offsets, and the LLM span annotator."""

import pytest

from zjulab.rtt import (
    LabelAlignmentError,
    RelevanceExample,
    SpanAnnotator,
    labels_from_offsets,
    locate_substrings,
    token_labels,
)
from zjulab.rtt.relevance import project_weights, token_char_offsets


def test_labels_from_offsets_overlap_rule():
    offsets = [(0, 3), (3, 4), (4, 8), (8, 8), (8, 12)]
    # span covers chars 2..5: overlaps tokens 0, 1, 2; the empty token (8, 8) is never labelled
    assert labels_from_offsets(offsets, [(2, 5)]) == [1, 1, 1, 0, 0]
    assert labels_from_offsets(offsets, [(8, 9)]) == [0, 0, 0, 0, 1]
    assert labels_from_offsets(offsets, []) == [0, 0, 0, 0, 0]


def test_token_labels_on_the_tiny_tokenizer(tiny_tokenizer):
    text = "the car, the dog"
    # tokens: 't' 'he' 'Ġc' 'ar' ',' 'Ġthe' 'Ġdo' 'g'; the comma is char 7, "dog" chars 13..16
    ids, labels = token_labels(text, [(7, 8), (13, 16)], tiny_tokenizer)
    assert tiny_tokenizer.convert_ids_to_tokens(ids) == ["t", "he", "Ġc", "ar", ",", "Ġthe", "Ġdo", "g"]
    assert labels == [0, 0, 0, 0, 1, 0, 1, 1]
    ids2, labels2 = token_labels(text, [(13, 16)], tiny_tokenizer, max_tokens=7)
    assert len(ids2) == len(labels2) == 7 and labels2[-1] == 1


@pytest.mark.parametrize("span", [(5, 3), (-1, 2), (0, 99)])
def test_bad_spans_are_rejected(tiny_tokenizer, span):
    with pytest.raises(LabelAlignmentError, match="does not fit"):
        token_labels("short text", [span], tiny_tokenizer)
    with pytest.raises(LabelAlignmentError):
        RelevanceExample("c", "short text", [span])


def test_locate_substrings_exact_then_loose():
    text = "I like Red cars and red   apples."
    assert locate_substrings(text, ["red"]) == [(20, 23)]
    assert locate_substrings(text, ["red apples"]) == [(20, 33 - 1)]
    assert locate_substrings(text, ["RED CARS", "missing"]) == [(7, 15)]


def test_char_offsets_of_policy_tokens_round_trip(tiny_tokenizer):
    text = "no, yes blue"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = token_char_offsets(ids, tiny_tokenizer)
    assert decoded == text
    assert "".join(decoded[a:b] for a, b in offsets) == text
    assert tiny_tokenizer.convert_ids_to_tokens(ids) == ["no", ",", "Ġyes", "Ġb", "lue"]
    assert offsets == [(0, 2), (2, 3), (3, 7), (7, 9), (9, 12)]
    # carry weights from a word tokenisation ("no," | "yes" | "blue") onto these tokens
    w = project_weights([(0, 3), (4, 7), (8, 12)], [0.1, 0.0, 0.9], offsets)
    assert w.tolist() == pytest.approx([0.1, 0.1, 0.0, 0.9, 0.9])


def test_span_annotator_uses_structured_output(scripted_chat):
    chat = scripted_chat(['Here you go: {"spans": ["red", "blue car"]}', "no json at all", "still no json"])
    ann = SpanAnnotator(chat, max_retries=1)
    out = ann.annotate(
        [("Mention a colour.", "A red hat and a blue car."), ("Mention a colour.", "Nothing.")]
    )
    assert out[0].spans == [(2, 5), (16, 24)]
    assert out[1].spans == []
    assert "Criterion: Mention a colour." in chat.calls[0][-1]["content"]


def test_fast_offsets_equal_the_prefix_decoding(tiny_tokenizer):
    import random

    from zjulab.rtt.relevance import _fast_offsets, token_char_offsets, token_char_offsets_slow

    rng = random.Random(0)
    alphabet = list("abc xyz ,.!?\n\t-é😀中")
    texts = ["no, yes", "  two  spaces ", "émojis 😀 ok", "中文 字符", "line\n\nbreak"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(100)]
    for text in texts:
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        fast = _fast_offsets(ids, tiny_tokenizer)
        assert fast is not None  # the one-pass path is taken
        assert fast == token_char_offsets_slow(ids, tiny_tokenizer) == token_char_offsets(ids, tiny_tokenizer)
    # special tokens decode to nothing: an empty range, on both paths
    eos = tiny_tokenizer.eos_token_id
    ids = tiny_tokenizer("yes no", add_special_tokens=False)["input_ids"] + [eos]
    assert token_char_offsets(ids, tiny_tokenizer) == token_char_offsets_slow(ids, tiny_tokenizer)
    assert (
        token_char_offsets(ids, tiny_tokenizer)[1][-1][0] == token_char_offsets(ids, tiny_tokenizer)[1][-1][1]
    )
    # ids a tokenizer would not produce itself (a non-canonical split, any sampled sequence of a
    # random model) take the windowed path, which must equal the exact one too
    pieces = [tiny_tokenizer.convert_tokens_to_ids(c) for c in ("y", "e", "s")]
    if None not in pieces and tiny_tokenizer("yes", add_special_tokens=False)["input_ids"] != pieces:
        assert _fast_offsets(pieces, tiny_tokenizer) is None
        assert token_char_offsets(pieces, tiny_tokenizer) == token_char_offsets_slow(pieces, tiny_tokenizer)
    from zjulab.rtt.relevance import _window_offsets

    vocab = len(tiny_tokenizer)
    for _ in range(100):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 50))]
        windowed = _window_offsets(ids, tiny_tokenizer)
        assert windowed is not None
        assert (
            windowed
            == token_char_offsets_slow(ids, tiny_tokenizer)
            == token_char_offsets(ids, tiny_tokenizer)
        )
    # a response cut inside a multi-byte character also takes the fallback
    cut = tiny_tokenizer("ok 😀", add_special_tokens=False)["input_ids"][:-1]
    assert token_char_offsets(cut, tiny_tokenizer) == token_char_offsets_slow(cut, tiny_tokenizer)
