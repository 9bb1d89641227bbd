from __future__ import annotations

import pytest
import torch

from zjulab.common.testing import tiny_causal_lm, tiny_encoder
from zjulab.hiesql import Interaction, Turn
from zjulab.hiesql.config import DecoderConfig, EncoderConfig, ParserConfig, PretrainConfig
from zjulab.hiesql.errors import HieSqlConfigError, ParserStoreError
from zjulab.hiesql.parser import HieSqlParser
from zjulab.hiesql.pretraining import BimodalPretrainer, paired_texts

INTER = Interaction(
    "concert",
    (
        Turn("How many singers are there?", "SELECT count(*) FROM singer"),
        Turn("Only those from France?", "SELECT count(*) FROM singer WHERE country = 'France'"),
    ),
)


def tiny_parser(lora: bool = False) -> HieSqlParser:
    enc, etok = tiny_encoder(seed=1)
    lm, ltok = tiny_causal_lm(seed=1)
    cfg = ParserConfig(
        encoder=EncoderConfig(rat_heads=4, rat_layers=1, dropout=0.0),
        decoder=DecoderConfig(lora=lora, num_beams=2, max_new_tokens=12, prefix_tokens=8),
        batch_size=2,
        lr=3e-3,
    )
    return HieSqlParser.from_modules(enc, etok, lm, ltok, cfg)


def test_loss_falls_and_round_trip(concert_schema, tmp_path):
    parser = tiny_parser()
    losses = parser.train([INTER], {"concert": concert_schema}, max_steps=12)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    before = [p.sql for p in parser.predict_interaction(INTER, concert_schema)]
    parser.save(tmp_path / "p")
    again = HieSqlParser.load(tmp_path / "p", device="cpu")
    assert [p.sql for p in again.predict_interaction(INTER, concert_schema)] == before


def test_lora_trains_only_adapters(concert_schema):
    parser = tiny_parser(lora=True)
    base = parser.decoder._base()
    emb_before = base.get_input_embeddings().weight.detach().clone()
    losses = parser.train([INTER], {"concert": concert_schema}, max_steps=4)
    assert losses[-1] < losses[0]
    assert torch.equal(base.get_input_embeddings().weight, emb_before)
    assert any("lora" in n for n, p in parser.decoder.named_parameters() if p.requires_grad)


def test_history_and_last_sql_reach_encoder_and_prompt(concert_schema):
    parser = tiny_parser()
    enc, prompt = parser.encode_turn(
        concert_schema, "Only France?", ["How many singers?"], "SELECT count(*) FROM singer"
    )
    kinds = {enc.graph.graph[n].kind for n in enc.nodes if n >= 0}
    assert kinds == {"question", "history", "sql", "table", "column"}
    text = parser.decoder.tokenizer.decode(prompt)
    assert (
        "earlier questions: How many singers?" in text and "previous SQL: SELECT count(*) FROM singer" in text
    )
    parser.config.encoder.context = "utterance"
    enc_u, prompt_u = parser.encode_turn(
        concert_schema, "Only France?", ["How many singers?"], "SELECT count(*) FROM singer"
    )
    assert {enc_u.graph.graph[n].kind for n in enc_u.nodes if n >= 0} == {"question", "table", "column"}
    assert "previous SQL" not in parser.decoder.tokenizer.decode(prompt_u)


def test_errors(concert_schema, tmp_path):
    parser = tiny_parser()
    with pytest.raises(HieSqlConfigError, match="no training turn"):
        parser.train([Interaction("concert", (Turn("hi"),))], {"concert": concert_schema}, max_steps=1)
    with pytest.raises(ParserStoreError, match=r"hiesql\.json"):
        HieSqlParser.load(tmp_path)
    (tmp_path / "hiesql.json").write_text('{"format_version": 99}')
    with pytest.raises(ParserStoreError, match="format_version"):
        HieSqlParser.load(tmp_path)
    with pytest.raises(HieSqlConfigError, match="context"):
        EncoderConfig(context="everything")  # type: ignore[arg-type]


def test_bimodal_pretraining_masks_both_sides_and_learns():
    from transformers import BertForMaskedLM

    model, tok = tiny_encoder(seed=2)
    mlm = BertForMaskedLM(model.config)
    trainer = BimodalPretrainer(
        mlm, tok, PretrainConfig(mask_prob=0.3, sql_mask_share=0.5, batch_size=4, lr=3e-3), device="cpu"
    )
    ex = trainer.mask_pair(
        "how many singers are from france", "SELECT count(*) FROM singer WHERE country = 'France'"
    )
    masked = [i for i, lab in enumerate(ex.labels) if lab != -100]
    n_content = sum(
        1
        for t, s in zip(
            tok("how many singers are from france", "SELECT count(*) FROM singer WHERE country = 'France'")[
                "input_ids"
            ],
            ex.token_type_ids,
        )
        if t not in tok.all_special_ids
    )
    assert len(masked) == round(0.3 * n_content)
    sql_side = sum(1 for i in masked if ex.token_type_ids[i] == 1)
    assert sql_side == round(len(masked) * 0.5)
    pairs = paired_texts([INTER], "history")
    assert pairs[1] == (
        "Only those from France? | How many singers are there?",
        "SELECT count(*) FROM singer WHERE country = 'France'",
    )
    losses = trainer.train(pairs * 4, steps=15)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    with pytest.raises(HieSqlConfigError, match="at least one"):
        trainer.train([], steps=1)


def test_save_never_replaces_a_foreign_directory(tmp_path):
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    parser = tiny_parser()
    with pytest.raises(ParserStoreError, match="not a saved parser"):
        parser.save(mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    parser.save(tmp_path / "p")
    parser.save(tmp_path / "p")  # replacing its own save is fine
    assert (tmp_path / "p" / "hiesql.json").is_file()
