"""Training rows: TRL's SFT and DPO data paths, preference pairs by fields, no silent truncation."""

import json

import pytest

from zjulab.conifer import ConiferInputError, build_conversations, to_dataset
from zjulab.conifer.training import check_dpo_rows, check_sft_rows, dpo_pairs, fit_conversations, sft_trainer

pytest.importorskip("trl")


def ladder(n, words=3, query="q"):
    return [
        {
            "query": query,
            "level": lvl,
            "instruction": f"Level {lvl} task",
            "answer": " ".join([f"a{lvl}"] * words),
        }
        for lvl in range(1, n + 1)
    ]


def test_sft_recipe_trains_lora_in_curriculum_order(tmp_path):
    import torch

    from zjulab.common.testing import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=0)
    recs = [
        {"query": "q", "level": lvl, "instruction": f"Say {lvl}", "answer": f"{lvl} " * 3} for lvl in (2, 1)
    ]
    ds = to_dataset(build_conversations(recs, "level", include_feedback=False))
    trainer = sft_trainer(
        ds,
        model,
        str(tmp_path / "out"),
        tokenizer=tok,
        max_steps=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        max_length=64,
        device="cpu",
        logging_steps=1,
        save_strategy="no",
    )
    assert trainer.args.train_sampling_strategy == "sequential"
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, torch.utils.data.SequentialSampler)
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if n in lora and not torch.equal(p, lora[n])]
    assert moved


def test_two_level_conversation_is_not_a_preference_pair():
    recs = ladder(2)
    convs = build_conversations(recs, "easy_to_hard", include_feedback=False)
    assert [len(c) for c in convs] == [4]  # the shape the old shape test took for feedback
    assert dpo_pairs(recs) == []
    with pytest.raises(ConiferInputError, match="not conversations"):
        dpo_pairs(convs)


def test_pairs_come_from_weak_answers_with_feedback():
    recs = ladder(3)
    recs[2].update(weak_answer="wrong", follows=False, feedback="It ignores the audience.")
    recs[1].update(weak_answer="fine", follows=True, feedback="")  # followed: no pair
    (pair,) = dpo_pairs(recs)
    assert pair == {
        "prompt": [{"role": "user", "content": "Level 3 task"}],
        "chosen": [{"role": "assistant", "content": "a3 a3 a3"}],
        "rejected": [{"role": "assistant", "content": "wrong"}],
    }


def test_authors_multi_turn_sample_gives_no_pairs(conifer_samples):
    convs = [row["messages"] for row in json.loads((conifer_samples / "06_multi_turn.json").read_text())]
    assert 4 in [len(c) for c in convs]
    with pytest.raises(ConiferInputError):
        dpo_pairs(convs)
    answers = json.loads((conifer_samples / "06_answer.json").read_text())
    assert dpo_pairs(answers.values()) == []  # no weak answers in the vanilla data
    assert check_sft_rows({"messages": c} for c in convs) == 3


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "end with a 'assistant'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "turn 1 should be 'user'"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}, "role must be"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "non-empty"),
        ({"text": "x"}, "'messages'"),
    ],
)
def test_sft_row_check_names_the_problem(row, match):
    with pytest.raises(ConiferInputError, match=match):
        check_sft_rows([row])


def test_dpo_row_check_names_the_problem():
    good = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    assert check_dpo_rows([good]) == 1
    with pytest.raises(ConiferInputError, match="DPO row 0: chosen and rejected are the same"):
        check_dpo_rows([dict(good, rejected=good["chosen"])])
    with pytest.raises(ConiferInputError, match="prompt: must end with a 'user'"):
        check_dpo_rows([dict(good, prompt=good["chosen"])])


def test_exported_rows_load_through_trl_data_paths(tmp_path):
    import datasets
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import apply_chat_template, is_conversational

    from zjulab.common.testing import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=0)
    recs = ladder(3)
    recs[2].update(
        weak_answer="wrong answer", follows=False, feedback="Misses the format.", process=["x: done"]
    )
    sft = [{"messages": c} for c in build_conversations(recs, "easy_to_hard")]
    assert check_sft_rows(sft) == len(sft) == 3
    ds = datasets.Dataset.from_list(sft)
    for row in ds:
        assert is_conversational(row)
        text = apply_chat_template(row, tok)["text"]
        assert all(m["content"] in text for m in row["messages"])
    pairs = dpo_pairs(recs)
    dpo = datasets.Dataset.from_list(pairs)
    out = apply_chat_template(dpo[0], tok)
    assert (
        "Level 3 task" in out["prompt"] and "a3 a3 a3" in out["chosen"] and "wrong answer" in out["rejected"]
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=tiny_causal_lm(seed=1)[0],
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), report_to="none", use_cpu=True, max_length=64),
        train_dataset=dpo,
        processing_class=tok,
    )
    row = trainer.train_dataset[0]
    assert "Level 3 task" in tok.decode(row["prompt_ids"])
    assert "a3 a3 a3" in tok.decode(row["chosen_ids"]) and "wrong answer" in tok.decode(row["rejected_ids"])


def test_long_easy_to_hard_conversation_keeps_its_hardest_levels(tmp_path):
    from zjulab.common.testing import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=0)
    conv = build_conversations(ladder(5, words=40), "easy_to_hard", include_feedback=False)[0]

    def n_tokens(c):
        return len(tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"])

    full = n_tokens(conv)
    budget = full * 2 // 3
    rows, report = fit_conversations([conv], tok, budget)
    assert report.split == 1 and report.pieces == len(rows) >= 2 and not report.truncated
    assert [m for r in rows for m in r] == conv  # every exchange kept, in order
    assert all(n_tokens(r) <= budget for r in rows)
    with pytest.raises(ConiferInputError, match=rf"conversation 0: {full} tokens > max_length={budget}"):
        fit_conversations([conv], tok, budget, overflow="error")
    trainer = sft_trainer(
        [{"messages": conv}],
        model,
        str(tmp_path / "o"),
        tokenizer=tok,
        max_length=budget,
        device="cpu",
        max_steps=1,
    )
    assert trainer.conifer_fit_report.split == 1
    texts = [tok.decode(r["input_ids"]) for r in trainer.train_dataset]
    assert any("Level 5 task" in t for t in texts)  # the hardest level reaches the trainer
