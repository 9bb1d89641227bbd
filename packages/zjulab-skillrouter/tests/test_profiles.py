"""Each profile feeds its models exactly what the model cards and the authors' evaluation code
use. The expected strings below are copied from the cards / the authors' code, not rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import RouterConfig, Skill, SkillRouter, TrainEncoderConfig, TrainRerankerConfig
from zjulab.skillrouter.profiles import PROFILES

# From the authors' src/common.py (the code behind pipizhao/SkillRouter-*-0.6B's reported numbers)
SR_QUERY_INSTRUCTION = (
    "Instruct: Given a coding task description, retrieve the most relevant "
    "skill document that would help an agent complete the task\nQuery:"
)
SR_RERANK_INSTRUCTION = "Given a coding task description, judge whether the skill document is relevant and useful for completing the task"
# From the Qwen3-Reranker-0.6B card (identical in the authors' get_reranker_template_tokens)
QWEN_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
# From the Qwen3-Embedding-0.6B card: f'Instruct: {task_description}\nQuery:{query}' with its default task
QWEN_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def test_skillrouter_profile_strings_and_budgets():
    p = PROFILES["skillrouter"]
    assert p.query_prompt == SR_QUERY_INSTRUCTION
    assert p.rerank_instruction == SR_RERANK_INSTRUCTION
    assert (p.index_desc_max, p.index_body_max, p.encoder_max_length) == (500, 8000, 4096)
    assert (p.rerank_desc_max, p.rerank_body_max, p.reranker_max_length, p.query_max_chars) == (
        500,
        2000,
        4096,
        2000,
    )
    user = p.rerank_user("merge two PDFs", "pdf-tools | Work with PDFs. | Merge files.")
    assert user == (
        "<Instruct>: " + SR_RERANK_INSTRUCTION + "\n\n<Query>: merge two PDFs\n\n"
        "<Document>: pdf-tools | Work with PDFs. | Merge files."
    )
    assert p.rerank_prefix == QWEN_PREFIX and p.rerank_suffix == QWEN_SUFFIX


def test_qwen3_profile_strings():
    p = PROFILES["qwen3"]
    assert p.query_prompt + "What is the capital of China?" == (
        f"Instruct: {QWEN_TASK}\nQuery:What is the capital of China?"
    )
    assert p.rerank_user("q", "d") == f"<Instruct>: {QWEN_TASK}\n<Query>: q\n<Document>: d"
    assert (p.encoder_max_length, p.reranker_max_length) == (8192, 8192)


def _tiny_qwen3(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from zjulab.common.testing import save_tiny, tiny_tokenizer

    tok = tiny_tokenizer("causal")
    import torch

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=8192,
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    return save_tiny(model, tok, tmp_path / "qwen3"), model, tok


def test_router_feeds_the_reranker_the_cards_prompt_and_last_position_logits(tmp_path, pool):
    import torch

    path, _model, tok = _tiny_qwen3(tmp_path)
    r = SkillRouter(
        HashingEncoder(64), str(path), RouterConfig(retrieve_k=4, rerank_k=4), device="cpu"
    ).index(pool)
    got = r.route("merge several PDF documents", k=4)
    scorer = r.reranker
    assert scorer.max_length == 4096
    doc = "pdf-tools | Work with PDF files. | Merge several PDF documents into one file with pypdf; reorder and rotate pages."
    prompt = scorer.build_prompt("merge several PDF documents", doc)
    assert prompt == (
        QWEN_PREFIX + "<Instruct>: " + SR_RERANK_INSTRUCTION + "\n\n<Query>: merge several PDF documents\n\n"
        "<Document>: " + doc + QWEN_SUFFIX
    )
    # the score is logit(yes) - logit(no) of the full forward pass, at the last position
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        full = scorer.model(input_ids=ids).logits[0, -1].float()
    want = float(full[scorer.yes_id] - full[scorer.no_id])
    by_id = {g.skill.id: g.rerank_score for g in got}
    assert by_id["pdf-merge"] == pytest.approx(want, abs=1e-4)


def test_profile_scorer_scores_equal_full_forward_and_threads_equal_sequential(tmp_path):
    """The profile scorer adds only its prompt to common's YesNoScorer: batched, left-padded,
    last-position scores equal one unpadded full forward pass per pair, and threads sharing the
    scorer (and so its tokenizer) get the scores sequential calls get."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from zjulab.skillrouter.scoring import ProfileYesNoScorer

    _path, model, tok = _tiny_qwen3(tmp_path)
    tok.padding_side = "right"
    scorer = ProfileYesNoScorer(model, tok, profile=PROFILES["skillrouter"], batch_size=3, device="cpu")
    docs = ["pdf-tools | Work with PDF files. | " + "Merge PDF documents. " * n for n in (1, 4, 9, 2, 7, 3)]
    queries = ["merge pdfs", "rotate the pages of a scanned contract", "ocr"]
    pairs = [(q, d) for q in queries for d in docs]
    seq = scorer.score(pairs)
    for (q, d), got in zip(pairs[:6], seq[:6]):
        ids = torch.tensor([tok(scorer.fit_prompt(q, d), add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            full = model(input_ids=ids).logits[0, -1].float()
        assert got == pytest.approx(float(full[scorer.yes_id] - full[scorer.no_id]), abs=1e-4)
    barrier = threading.Barrier(6)

    def go(i):
        barrier.wait(timeout=30)
        mine = pairs[i:] + pairs[:i]  # each thread its own order, so batches differ in padding
        return np.roll(scorer.score(mine), i)

    with ThreadPoolExecutor(6) as ex:
        par = list(ex.map(go, range(6)))
    for p in par:
        np.testing.assert_allclose(p, seq, atol=1e-4)
    assert tok.padding_side == "right"


def test_training_configs_take_the_profile():
    enc = TrainEncoderConfig()
    assert (enc.query_prompt, enc.desc_max, enc.body_max) == (SR_QUERY_INSTRUCTION, 500, 8000)
    rr = TrainRerankerConfig(profile="qwen3")
    assert (rr.max_length, rr.desc_max, rr.body_max) == (8192, 500, 2000)
    assert TrainEncoderConfig(profile="embedded").query_prompt == ""


def test_reranker_training_builds_the_routing_prompt(tmp_path):
    from zjulab.skillrouter.reranker_training import _setup

    _path, model, tok = _tiny_qwen3(tmp_path)
    _, _, scorer = _setup(model, tok, TrainRerankerConfig(), "cpu")
    assert scorer.build_prompt("q", "d") == (
        QWEN_PREFIX + "<Instruct>: " + SR_RERANK_INSTRUCTION + "\n\n<Query>: q\n\n<Document>: d" + QWEN_SUFFIX
    )


def test_pooling_comes_from_the_sentence_transformers_config(tmp_path, tiny_encoder_path):
    import shutil

    from zjulab.skillrouter import load_skill_encoder

    for mode, want in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean")):
        d = tmp_path / want
        shutil.copytree(tiny_encoder_path, d)
        (d / "1_Pooling").mkdir()
        (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, mode: True}))
        assert load_skill_encoder(d, device="cpu").pooling == want
    path, _, _ = _tiny_qwen3(tmp_path)
    enc = load_skill_encoder(path, device="cpu")  # a decoder without an ST config: last token
    assert enc.pooling == "last" and enc.max_length == 4096
    assert load_skill_encoder(path, profile="embedded", device="cpu").max_length == 256


def test_profile_is_stored_in_the_index(tmp_path, pool):
    r = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False, profile="qwen3")).index(pool)
    back = SkillRouter.load(r.save(tmp_path / "idx"), encoder=HashingEncoder(64))
    assert back.config.profile == "qwen3" and back._query_prompt == PROFILES["qwen3"].query_prompt
    assert back.config.index_body_max == 8000
    assert np.allclose(
        [x.score for x in back.route("merge pdf", k=3)], [x.score for x in r.route("merge pdf", k=3)]
    )


def test_empty_body_skill_routes_on_name_and_description(pool, caplog):
    import logging

    from zjulab.skillrouter.formatting import format_skill

    bare = Skill(name="unit-converter", description="Convert units between metric and imperial.", body="")
    blank = Skill(name="noop", description="Does nothing.", body="  \n ")
    assert format_skill(bare) == "unit-converter | Convert units between metric and imperial."
    assert format_skill(blank, desc_max=4) == "noop | Does"
    with caplog.at_level(logging.INFO, logger="zjulab.skillrouter"):
        r = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False, profile="embedded")).index(
            [*pool, bare, blank]
        )
    assert f"2 of {len(pool) + 2} skills have no body" in caplog.text
    assert r.route("convert metric units to imperial", k=1)[0].skill.id == "unit-converter"


def test_every_reranker_tokenizer_call_holds_the_tokenizer_lock(tmp_path):
    """A served router scores from worker threads: each call the profile scorer makes on the
    shared tokenizer (chat-template rendering included) holds common's tokenizer lock, so a
    thread never renders or tokenizes while another has the tokenizer's sides switched."""
    from zjulab.common.batching import tokenizer_lock
    from zjulab.skillrouter.scoring import ProfileYesNoScorer

    _path, model, tok = _tiny_qwen3(tmp_path)
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    prof = PROFILES["embedded"]
    assert prof.rerank_prefix is None  # the profile that renders the chat template
    scorer = ProfileYesNoScorer(model, tok, profile=prof, max_length=64, batch_size=2, device="cpu")
    unlocked: list[str] = []
    base = type(tok)

    def watch(name):
        def call(self, *a, **kw):
            if not tokenizer_lock(self)._is_owned():
                unlocked.append(name)
            return getattr(base, name)(self, *a, **kw)

        return call

    names = ("__call__", "apply_chat_template", "encode", "decode", "convert_tokens_to_ids")
    tok.__class__ = type("Watched", (base,), {n: watch(n) for n in names})
    try:
        scores = scorer.score([("merge pdfs", "pdf-tools | Merge PDF files. " * 20), ("ocr", "x | y")])
        # the double can fail: a call made without the lock is recorded
        tok("outside any lock")
    finally:
        tok.__class__ = base
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert unlocked == ["__call__"]


def test_a_loaded_encoder_gets_the_profiles_query_prompt(pool, tmp_path):
    """Passing an already-loaded encoder (not a hub id) still feeds it the profile's query text,
    also after a save/load with the encoder handed back."""

    class Recording(HashingEncoder):
        def __init__(self):
            super().__init__(64)
            self.seen: list[str] = []

        def encode(self, texts, batch_size=32, **kw):
            self.seen += list(texts)
            return super().encode(texts, batch_size=batch_size, **kw)

    for profile, instruction in (("skillrouter", SR_QUERY_INSTRUCTION), ("embedded", "")):
        enc = Recording()
        r = SkillRouter(enc, None, RouterConfig(rerank=False, profile=profile)).index(pool)
        enc.seen.clear()
        r.route("merge pdf", k=2)
        assert enc.seen == [instruction + "merge pdf"]
        back = SkillRouter.load(r.save(tmp_path / profile), encoder=enc)
        enc.seen.clear()
        back.route("rotate pages", k=2)
        assert enc.seen == [instruction + "rotate pages"]
