"""Worker for test_distributed: one group of G=4 split over the processes of a torchrun job.

Writes one JSON file per process (`result-RANK.json` in the output dir) with its responses and token advantages (group_token norm).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from datasets import Dataset
from trl import GRPOConfig

from zjulab.common.testing import tiny_causal_lm
from zjulab.rtt import RTTConfig, RTTGRPOTrainer, Rubric, RubricReward, SpanRelevance

COMPLETIONS = ["no, yes", "yes no", "the car, the dog", "red blue"]


def main() -> None:
    per_device, out_dir = int(sys.argv[1]), sys.argv[2]
    model, tok = tiny_causal_lm(0)

    def rollout(prompts, trainer):
        base = trainer.accelerator.process_index * len(prompts)
        comp = [COMPLETIONS[(base + i) % 4] for i in range(len(prompts))]
        return {
            "prompt_ids": [tok(p)["input_ids"] for p in prompts],
            "completion_ids": [tok(c, add_special_tokens=False)["input_ids"] for c in comp],
            "logprobs": None,
        }

    rubrics = [
        Rubric.check("punctuation:no_comma").to_json(),
        Rubric.check("keywords:existence", keywords=["yes"]).to_json(),
    ]
    ds = Dataset.from_list([{"prompt": "Answer yes or no", "rubrics": rubrics}] * 4)
    args = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=per_device,
        num_generations=4,
        generation_batch_size=4,
        max_completion_length=8,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        bf16=False,
        disable_tqdm=True,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = RTTGRPOTrainer(
        model,
        RubricReward(aggregate="rate"),
        SpanRelevance(),
        RTTConfig(token_norm="group_token"),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        rollout_func=rollout,
    )
    trainer._generate_and_score_completions([dict(ds[0])] * per_device)
    credit = trainer.last_credit
    rows = [
        {"text": t, "a_tok": credit.token_advantages[i, : len(ids)].tolist()}
        for i, (t, ids) in enumerate(zip(credit.texts, credit.completion_ids))
    ]
    rank = trainer.accelerator.process_index
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, f"result-{rank}.json").write_text(json.dumps({"rank": rank, "rows": rows}))
    # Leave together and tear the gloo group down before interpreter exit; a rank that exits
    # while its peer still talks to it aborts with "terminate called without an active exception".
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
