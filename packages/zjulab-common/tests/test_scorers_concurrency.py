"""Scorers: the last-position LM head gives the same scores, and threads sharing a tokenizer agree."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from zjulab.common import CrossEncoderScorer, YesNoScorer
from zjulab.common.batching import padding_side

PAIRS = [
    ("merge two pdf files", "pdf-tools: merge, split and rotate PDF documents"),
    ("what is the weather", "weather: current conditions and forecasts for a city"),
    ("translate to french", "a very long document " * 30),
    ("x", "y"),
]


def test_last_position_logits_equal_the_full_logits(tiny_causal_lm):
    model, tok = tiny_causal_lm
    scorer = YesNoScorer(model, tok, device="cpu", yes="a", no="b", batch_size=3)
    fast = scorer.score(PAIRS)
    assert scorer._keep_last is True  # the tiny Qwen2 takes logits_to_keep
    scorer._keep_last = False
    full = scorer.score(PAIRS)
    np.testing.assert_allclose(fast, full, rtol=0, atol=1e-5)
    assert len(set(np.round(full, 5))) == len(PAIRS)  # the scores differ per pair: a real check


def test_threads_sharing_one_tokenizer_score_as_sequential(tiny_causal_lm, tiny_cross_encoder):
    model, tok = tiny_causal_lm
    yes_no = YesNoScorer(model, tok, device="cpu", yes="a", no="b", batch_size=2)
    cmodel, ctok = tiny_cross_encoder
    cross = CrossEncoderScorer(cmodel, ctok, device="cpu", batch_size=2)
    side = tok.padding_side
    want_yn = yes_no.score(PAIRS)
    want_ce = cross.score(PAIRS)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: (yes_no if i % 2 else cross).score(PAIRS), range(12)))
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, want_yn if i % 2 else want_ce, rtol=0, atol=1e-5)
    assert tok.padding_side == side  # left as it was found


def test_padding_side_holds_the_tokenizer_for_its_block(tiny_tokenizer):
    tok = tiny_tokenizer
    seen = []
    entered = threading.Event()

    def other():
        with padding_side(tok, "right"):
            seen.append(tok.padding_side)

    with padding_side(tok, "left"):
        t = threading.Thread(target=other)
        t.start()
        t.join(0.2)
        assert t.is_alive()  # waits for the first block to end
        with padding_side(tok, "left", truncation="left"):  # re-entrant in the same thread
            entered.set()
        assert tok.padding_side == "left"
    t.join(10)
    assert seen == ["right"] and entered.is_set()
