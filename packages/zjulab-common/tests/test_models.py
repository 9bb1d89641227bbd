"""Chat model, encoders and scorers against hand computations on the tiny models."""

import numpy as np
import pytest
import torch

from zjulab.common import (
    ConfigError,
    CrossEncoderScorer,
    InputError,
    TransformersChatModel,
    TransformersEncoder,
    YesNoScorer,
)
from zjulab.common.testing import HashingEncoder, tiny_causal_lm


def test_tiny_tokenizer_layout(tiny_tokenizer):
    assert tiny_tokenizer.convert_tokens_to_ids("yes") != tiny_tokenizer.unk_token_id
    assert tiny_tokenizer.convert_tokens_to_ids("no") != tiny_tokenizer.unk_token_id
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tiny_tokenizer.decode(tiny_tokenizer("héllo wörld ☕")["input_ids"]) == "héllo wörld ☕"


def test_yes_no_score_equals_hand_computation(tiny_causal_lm):
    model, tok = tiny_causal_lm
    scorer = YesNoScorer(model, tok, device="cpu")
    pairs = [("red fox", "The quick brown fox"), ("sql", "SELECT name FROM singer WHERE age > 30")]
    got = scorer.score(pairs)
    for (q, d), s in zip(pairs, got):
        prompt = (
            "<|im_start|>system\n" + scorer.system + "<|im_end|>\n<|im_start|>user\n"
            f"<Instruct>: {scorer.instruction}\n<Query>: {q}\n<Document>: {d}<|im_end|>\n<|im_start|>assistant\n"
        )
        assert scorer.build_prompt(q, d) == prompt
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        expected = (logits[tok.convert_tokens_to_ids("yes")] - logits[tok.convert_tokens_to_ids("no")]).item()
        assert s == pytest.approx(expected, abs=1e-5)


def test_a_subclass_user_message_is_framed_and_cut_like_the_default(tiny_causal_lm):
    model, tok = tiny_causal_lm

    class Plain(YesNoScorer):
        def user_message(self, query, document):
            return f"Q={query}|D={document}"

    scorer = Plain(model, tok, device="cpu", system="S", max_length=60)
    assert scorer.build_prompt("a", "b") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ=a|D=b<|im_end|>\n<|im_start|>assistant\n"
    )
    cut = scorer.fit_prompt("a", "word " * 200)
    assert cut.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ=a|D=word")
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 60 + 2


def test_yes_no_truncates_document_not_prompt_end(tiny_causal_lm):
    model, tok = tiny_causal_lm
    scorer = YesNoScorer(model, tok, device="cpu", max_length=240)
    prompt = scorer.fit_prompt("q", "word " * 500)
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert 200 < n <= 240 + 2 and prompt.endswith("<|im_start|>assistant\n")


def test_scorer_input_errors(tiny_causal_lm):
    model, tok = tiny_causal_lm
    scorer = YesNoScorer(model, tok, device="cpu")
    with pytest.raises(InputError, match="pair 1"):
        scorer.score([("a", "b"), ("only one",)])  # type: ignore[list-item]
    assert scorer.score([]).shape == (0,)
    with pytest.raises(ConfigError, match="same token"):
        YesNoScorer(model, tok, device="cpu", yes="no")


def test_cross_encoder_equals_manual(tiny_cross_encoder):
    model, tok = tiny_cross_encoder
    scorer = CrossEncoderScorer(model, tok, device="cpu")
    pairs = [("a query", "a document"), ("b", "a much longer document about foxes")]
    got = scorer.score(pairs)
    for (q, d), s in zip(pairs, got):
        enc = tok(q, d, return_tensors="pt")
        with torch.no_grad():
            expected = model(**enc).logits[0, 0].item()
        assert s == pytest.approx(expected, abs=1e-5)


def test_mean_pooled_encoder_equals_manual(tiny_encoder):
    model, tok = tiny_encoder
    enc = TransformersEncoder(model, tok, device="cpu")
    texts = ["short", "a somewhat longer sentence about memory graphs"]
    got = enc.encode(texts, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (2, 32)
    for t, row in zip(texts, got):
        e = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = model(**e).last_hidden_state[0].mean(0)
        h = h / h.norm()
        np.testing.assert_allclose(row, h.numpy(), atol=1e-5)
    assert enc.encode([]).shape == (0, 32)
    with pytest.raises(InputError, match="not a single string"):
        enc.encode("oops")  # type: ignore[arg-type]


def test_hashing_encoder_is_deterministic_and_lexical():
    enc = HashingEncoder(128)
    a, b, c = enc.encode(["red apple pie", "apple pie recipe", "quantum chromodynamics"])
    assert float(a @ b) > float(a @ c)
    np.testing.assert_array_equal(enc.encode(["red apple pie"])[0], a)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-6)


def test_chat_model_greedy_matches_generate(tiny_causal_lm):
    model, tok = tiny_causal_lm
    chat = TransformersChatModel(
        model, tok, device="cpu", batch_size=2, max_new_tokens=6, on_truncation="return"
    )
    convs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me about the sea"}],
        [{"role": "user", "content": "yes or no"}],
    ]
    got = chat.generate(convs)
    for conv, text in zip(convs, got):
        ids = tok(chat.render(conv), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        expected = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        assert text == expected
    assert chat.usage.calls == 3


def test_tiny_model_answer_depends_on_the_prompt(tiny_chat_model):
    prompts = ["hi", "tell me about the sea", "SELECT name FROM singer", "yes or no"]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    a = tiny_chat_model.generate(convs, on_error="raise")
    b = tiny_chat_model.generate(list(reversed(convs)))
    assert all(t.strip() for t in a)  # non-empty
    assert len(set(a)) == len(a)  # different prompts, different answers
    assert b == list(reversed(a))  # same prompt, same answer, whatever the batch order


def test_finish_reason_and_token_counts(tiny_chat_model):
    conv = [[{"role": "user", "content": "tell me about the sea"}]]
    full = tiny_chat_model.generate_results(conv, max_new_tokens=6)[0]
    assert (full.finish_reason, full.completion_tokens) == ("length", 6)
    tok = tiny_chat_model.tokenizer
    assert full.prompt_tokens == len(
        tok(tiny_chat_model.render(conv[0]), add_special_tokens=False)["input_ids"]
    )
    # stop at a string that occurs in the greedy answer: cut before it, tokens counted through it
    longer = tiny_chat_model.generate_results(conv, max_new_tokens=12)[0]
    stop = longer.text[5:8]
    res = tiny_chat_model.generate_results(conv, max_new_tokens=12, stop=[stop])[0]
    assert res.finish_reason == "stop" and stop not in res.text
    assert longer.text.startswith(res.text) and len(res.text) <= 5
    assert res.completion_tokens < 12


def test_a_stop_string_that_begins_in_the_prompt_does_not_stop_the_answer(tiny_chat_model):
    # transformers' stop-string criterion reads the prompt too: a stop string made of the
    # prompt's last characters and the answer's first one ended the answer at its first token
    conv = [[{"role": "user", "content": "tell me about the sea"}]]
    full = tiny_chat_model.generate_results(conv, max_new_tokens=12)[0]
    prompt = tiny_chat_model.render(conv[0])
    across = prompt[-3:] + full.text[:1]
    assert across not in full.text
    res = tiny_chat_model.generate_results(conv, max_new_tokens=12, stop=[across])[0]
    assert (res.text, res.finish_reason, res.completion_tokens) == (full.text, "length", 12)
    # a stop string inside the answer still stops it, in a batch with another prompt too
    inside = full.text[4:7]
    other = [{"role": "user", "content": "name a colour"}]
    both = tiny_chat_model.generate_results([conv[0], other], max_new_tokens=12, stop=[inside])
    assert both[0].finish_reason == "stop" and full.text.startswith(both[0].text)
    assert inside not in both[0].text and both[0].completion_tokens < 12


def test_truncation_policy_raises(tiny_causal_lm):
    from zjulab.common import IncompleteAnswerError

    model, tok = tiny_causal_lm
    chat = TransformersChatModel(model, tok, device="cpu", max_new_tokens=3, on_truncation="raise")
    with pytest.raises(IncompleteAnswerError, match="cut off") as info:
        chat.generate([[{"role": "user", "content": "hi"}]])
    assert info.value.results[0].text


def test_chat_model_input_and_config_errors(tiny_chat_model):
    with pytest.raises(InputError, match="message 0 needs"):
        tiny_chat_model.generate([[{"text": "hi"}]])
    with pytest.raises(InputError, match="not a single one"):
        tiny_chat_model.generate({"role": "user", "content": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_new_tokens"):
        tiny_chat_model.generate([[{"role": "user", "content": "x"}]], max_new_tokens=0)
    with pytest.raises(ConfigError, match=r"\['do_sample'\] are not supported"):
        tiny_chat_model.generate([[{"role": "user", "content": "x"}]], do_sample=True)
    with pytest.raises(ConfigError, match="response_format"):
        tiny_chat_model.generate(
            [[{"role": "user", "content": "x"}]], response_format={"type": "json_object"}
        )
    assert tiny_chat_model.generate([]) == []


def test_sampling_is_seeded_with_a_local_generator():
    model, tok = tiny_causal_lm(seed=3)
    chat = TransformersChatModel(model, tok, device="cpu", max_new_tokens=8, on_truncation="return")
    conv = [[{"role": "user", "content": "write"}]]
    state = torch.random.get_rng_state()
    a = chat.generate(conv, temperature=1.0, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    torch.manual_seed(123)  # ... and does not matter
    b = chat.generate(conv, temperature=1.0, seed=7)
    c = chat.generate(conv, temperature=1.0, seed=8)
    greedy = chat.generate(conv)
    assert a == b and a != c and a != greedy


def test_gumbel_sampler_draws_from_the_softmax():
    from zjulab.common.transformers_chat import _GumbelSampler

    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    g = torch.Generator().manual_seed(0)
    sampler = _GumbelSampler(g)
    counts = torch.zeros(3)
    for _ in range(4000):
        counts[sampler(None, logits).argmax()] += 1
    assert torch.allclose(counts / 4000, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


def test_generate_is_thread_safe(tiny_causal_lm):
    import threading

    model, tok = tiny_causal_lm
    chat = TransformersChatModel(model, tok, device="cpu", max_new_tokens=4, on_truncation="return")
    convs = [[{"role": "user", "content": w}] for w in ["red", "green", "blue", "sea"]]
    expected = chat.generate(convs)
    got: dict[int, list[str]] = {}

    def run(i):
        got[i] = chat.generate(convs[i : i + 1] * 2, temperature=0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i][0] for i in range(4)] == expected


def test_tokenizer_without_chat_template_is_a_config_error(tiny_causal_lm):
    from zjulab.common.testing import tiny_tokenizer

    model, _ = tiny_causal_lm
    tok = tiny_tokenizer("causal")
    tok.chat_template = None
    chat = TransformersChatModel(model, tok, device="cpu", max_new_tokens=2)
    with pytest.raises(ConfigError, match="no chat template"):
        chat.generate([[{"role": "user", "content": "x"}]])
    from zjulab.common.testing import TINY_CHAT_TEMPLATE

    given = TransformersChatModel(
        model, tok, device="cpu", max_new_tokens=2, chat_template=TINY_CHAT_TEMPLATE
    )
    assert given.render([{"role": "user", "content": "x"}]).endswith("<|im_start|>assistant\n")


def test_torch_dtype_as_model_cards_spell_it(tiny_causal_lm, tmp_path):
    from zjulab.common.testing import save_tiny

    path = save_tiny(*tiny_causal_lm, tmp_path / "m")
    chat = TransformersChatModel(str(path), device="cpu", torch_dtype="bfloat16", max_new_tokens=2)
    assert next(chat.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="disagree"):
        TransformersChatModel(str(path), dtype="float16", torch_dtype="bfloat16")


def test_tokenizer_comes_from_the_models_subfolder(tiny_causal_lm, tmp_path):
    from zjulab.common.testing import save_tiny

    save_tiny(*tiny_causal_lm, tmp_path / "repo" / "chat")
    chat = TransformersChatModel(str(tmp_path / "repo"), device="cpu", subfolder="chat", max_new_tokens=2)
    assert chat.tokenizer.chat_template == tiny_causal_lm[1].chat_template
    assert chat.generate_results([[{"role": "user", "content": "hi"}]])[0].completion_tokens == 2


def test_pool_hidden_hand_worked():
    from zjulab.common import pool_hidden

    h = torch.arange(12.0).view(1, 3, 4)  # rows [0..3], [4..7], [8..11]
    m = torch.tensor([[1, 1, 0]])  # the third position is padding
    assert pool_hidden(h, m).tolist() == [[2.0, 3.0, 4.0, 5.0]]
    assert pool_hidden(h, m, "cls").tolist() == [[0.0, 1.0, 2.0, 3.0]]
    assert pool_hidden(h, m, "last").tolist() == [[4.0, 5.0, 6.0, 7.0]]


def test_building_tiny_models_leaves_the_global_rng_alone():
    from zjulab.common.testing import tiny_encoder

    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    tiny_causal_lm(seed=4)
    tiny_encoder(seed=5)
    assert torch.equal(torch.rand(3), expected)
    a, _ = tiny_causal_lm(seed=4)
    b, _ = tiny_causal_lm(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
