"""A two-step CPU smoke run of the SFT recipe on a tiny random model."""

import pytest

from zjulab.conifer import build_conversations, to_dataset
from zjulab.conifer.training import sft_trainer

pytest.importorskip("trl")


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
