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


def test_every_tokenizer_call_of_a_scorer_holds_the_tokenizer_lock(tiny_causal_lm):
    """A fast tokenizer sets its padding in the Rust backend on each call: the unpadded length
    count of ``fit_prompt`` in one thread must not switch padding off under another thread's
    padded batch (seen as "expected sequence of length 360 at dim 1 (got 341)")."""
    from zjulab.common.batching import tokenizer_lock

    model, tok = tiny_causal_lm
    scorer = YesNoScorer(model, tok, device="cpu", yes="a", no="b", max_length=200)
    done = []
    t = threading.Thread(target=lambda: done.append(scorer.fit_prompt("q", "long document " * 40)))
    with tokenizer_lock(tok):
        t.start()
        t.join(0.3)
        assert t.is_alive() and not done  # it waits for the lock holder
    t.join(10)
    assert done and len(tok(done[0], add_special_tokens=False)["input_ids"]) <= 200
    assert 0 < done[0].count("long document") < 40  # the document was cut to fit, not dropped


def test_threads_with_long_prompts_of_different_lengths_score_as_sequential(tiny_causal_lm):
    model, tok = tiny_causal_lm
    scorer = YesNoScorer(model, tok, device="cpu", yes="a", no="b", batch_size=3, max_length=512)
    pairs = [(q, "Merge PDF documents. " * n) for q in ("merge", "rotate pages", "ocr") for n in (1, 9, 4, 7)]
    want = scorer.score(pairs)
    barrier = threading.Barrier(6)

    def go(i):
        barrier.wait(timeout=30)
        return np.roll(scorer.score(pairs[i:] + pairs[:i]), i)

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(go, range(6)))
    for g in got:
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-4)


def test_sentence_transformer_encoder_holds_its_tokenizer_lock_while_encoding():
    """Another thread that uses the same tokenizer waits until an encode call has finished."""
    import threading

    import numpy as np

    from zjulab.common.batching import tokenizer_lock
    from zjulab.common.encoders import SentenceTransformerEncoder

    seen = []

    class FakeST:
        tokenizer = object.__new__(type("Tok", (), {}))

        def to(self, device):
            return self

        def get_sentence_embedding_dimension(self):
            return 2

        def encode(self, texts, **kw):
            got = []
            t = threading.Thread(
                target=lambda: got.append(tokenizer_lock(self.tokenizer).acquire(blocking=False))
            )
            t.start()
            t.join()
            seen.extend(got)
            return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)

    enc = SentenceTransformerEncoder(FakeST(), device="cpu")
    out = enc.encode(["a", "b"])
    assert out.shape == (2, 2) and seen == [False]  # the lock was held during the model's encode
    assert tokenizer_lock(FakeST.tokenizer).acquire(blocking=False)  # and released after it
