import itertools
from pathlib import Path

import pytest

from zjulab.common.testing import tiny_encoder
from zjulab.crs.config import TaggerConfig
from zjulab.crs.errors import CrsConfigError, DataFormatError, NotTrainedError
from zjulab.crs.samples import UnderstandingExample
from zjulab.crs.tagger import LexiconTagger, SpanTagger, bio_tag_set, spans_to_token_tags, token_tags_to_spans

TEXT = "a dry skin toner"
# byte-level BPE style offsets: the leading space is part of the token
OFFSETS = [(0, 0), (0, 1), (1, 5), (5, 10), (10, 16), (0, 0)]


def test_bio_alignment_through_offsets():
    spans = [("skin", 2, 10), ("product", 11, 16)]
    tags = spans_to_token_tags(TEXT, OFFSETS, spans)
    assert tags == ["O", "O", "B-skin", "I-skin", "B-product", "O"]
    assert token_tags_to_spans(TEXT, OFFSETS, tags) == spans


def test_decode_repairs_dangling_inside_tag():
    tags = ["O", "I-skin", "I-skin", "O", "B-product", "O"]
    assert token_tags_to_spans(TEXT, OFFSETS, tags) == [("skin", 0, 5), ("product", 11, 16)]
    assert bio_tag_set(["b", "a", "b"]) == ["O", "B-a", "I-a", "B-b", "I-b"]


def examples() -> list[UnderstandingExample]:
    rows = [
        ("my skin is dry", [("skin", 11, 14)]),
        ("a large screen please", [("screen", 2, 7)]),
        ("a large battery", [("battery", 2, 7)]),
        ("it is for men", [("group", 10, 13)]),
        ("oily skin", [("skin", 0, 4)]),
        ("what else", []),
        ("dry skin please", [("skin", 0, 3)]),
        ("for women", [("group", 4, 9)]),
    ]
    return [UnderstandingExample(t, s, [(k, t[a:b]) for k, a, b in s]) for t, s in rows]


def test_lexicon_tagger_longest_match_and_word_boundaries():
    lex = LexiconTagger().fit(examples())
    # "large" was seen once as screen and once as battery: ties go to the attribute name
    # ("battery" < "screen"), whatever order the file lists them in
    assert lex.predict(["dry and large for women"]) == [
        [("skin", 0, 3), ("battery", 8, 13), ("group", 18, 23)]
    ]
    rev = LexiconTagger().fit(examples()[::-1])
    assert rev.lexicon == lex.lexicon
    assert lex.predict(["dryer"]) == [[]]  # no match inside a word
    with pytest.raises(NotTrainedError):
        LexiconTagger().predict(["x"])


@pytest.mark.parametrize(("use_lstm", "use_crf"), [(True, True), (False, True), (False, False)])
def test_span_tagger_lowers_loss_and_fits_training_set(use_lstm, use_crf):
    model, tok = tiny_encoder(1, hidden_size=32)
    cfg = TaggerConfig(
        max_steps=60,
        batch_size=8,
        learning_rate=2e-3,
        head_learning_rate=2e-2,
        device="cpu",
        max_length=32,
        use_lstm=use_lstm,
        use_crf=use_crf,
        lstm_hidden=32,
    )
    tagger = SpanTagger(cfg, model=model, tokenizer=tok)
    hist = tagger.fit(examples())
    assert hist.steps == 60
    assert hist.mean_loss(False) < 0.2 * hist.mean_loss(True)
    scores = tagger.evaluate(examples())
    assert scores["f1"] > 0.8


def test_span_tagger_save_load_round_trip(tmp_path: Path):
    model, tok = tiny_encoder(2)
    tagger = SpanTagger(
        TaggerConfig(max_steps=5, batch_size=4, device="cpu", max_length=32), model=model, tokenizer=tok
    )
    tagger.fit(examples())
    before = tagger.predict(examples())
    tagger.save(tmp_path / "ckpt")
    again = SpanTagger.load(tmp_path / "ckpt", device="cpu")
    assert again.tags == tagger.tags
    assert again.predict(examples()) == before


def test_span_tagger_errors(tmp_path: Path):
    with pytest.raises(NotTrainedError, match="before fit"):
        SpanTagger(TaggerConfig(device="cpu")).predict(["x"])
    with pytest.raises(NotTrainedError, match="no checkpoint"):
        SpanTagger.load(tmp_path)
    with pytest.raises(CrsConfigError, match="dropout"):
        TaggerConfig(dropout=1.5)
    with pytest.raises(CrsConfigError, match="batch_size"):
        TaggerConfig(batch_size=0)
    model, tok = tiny_encoder(3)

    class SlowTokenizer:
        is_fast = False
        pad_token = "[PAD]"

    with pytest.raises(CrsConfigError, match="needs a fast tokenizer"):
        SpanTagger(TaggerConfig(device="cpu"), model=model, tokenizer=SlowTokenizer()).fit(examples())
    with pytest.raises(DataFormatError, match="no training samples"):
        SpanTagger(TaggerConfig(device="cpu"), model=model, tokenizer=tok).fit([])


def test_bio_alignment_round_trips_on_chinese_uneed_utterances(uneed_dir):
    # byte-level BPE splits a Chinese character into several tokens that share its offsets
    from zjulab.common.testing import tiny_tokenizer
    from zjulab.crs.loaders import load_uneed_dir
    from zjulab.crs.samples import build_understanding

    tok = tiny_tokenizer("encoder")
    corpus = load_uneed_dir(uneed_dir)
    examples = [e for ds in corpus.dialogues.values() for e in build_understanding(ds)]
    assert sum(len(e.spans) for e in examples) >= 15
    for e in examples:
        offsets = tok(e.text, return_offsets_mapping=True)["offset_mapping"]
        tags = spans_to_token_tags(e.text, offsets, e.spans)
        assert token_tags_to_spans(e.text, offsets, tags) == e.spans


def test_multi_word_value_is_one_unbroken_bio_run():
    # a tokenizer that gives the inner space its own token: "high resolution camera"
    text = "high resolution camera"
    offsets = [(0, 0), (0, 4), (4, 5), (5, 15), (15, 16), (16, 22), (0, 0)]
    spans = [("camera", 0, 15)]
    tags = spans_to_token_tags(text, offsets, spans)
    # the space token between the words is I-, never O (O -> I- is a transition the CRF forbids)
    assert tags == ["O", "B-camera", "I-camera", "I-camera", "O", "O", "O"]
    assert token_tags_to_spans(text, offsets, tags) == spans
    from zjulab.crs.crf import bio_constraints

    labels = bio_tag_set(["camera"])
    _, allowed = bio_constraints(labels)
    idx = [labels.index(t) for t in tags[1:-1]]
    assert all(bool(allowed[a, b]) for a, b in itertools.pairwise(idx))
