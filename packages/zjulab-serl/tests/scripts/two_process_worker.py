"""Worker for test_distributed: one SERL step on each process of a torchrun (gloo) job.

Writes ``result-RANK.json`` in the output dir: a checksum of every parameter after the step, the
role counts of each micro-batch, the local judge counts and the logged SERL metrics.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from datasets import Dataset

from zjulab.common.testing import tiny_causal_lm
from zjulab.serl import SERLConfig, SERLTrainer

PROMPTS = [
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "user", "content": "Recommend a phone with a large battery."}],
]


def main() -> None:
    out_dir = sys.argv[1]
    model, tok = tiny_causal_lm(0)
    tok.padding_side = "left"
    args = SERLConfig(
        output_dir=out_dir,
        num_generations=3,
        num_judge_generations=2,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        judge_micro_batch_size=2,
        max_completion_length=8,
        max_judge_completion_length=4,
        max_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        actor_reward="copeland",
        loss_schedule="constant",
        loss_type="grpo",
        disable_tqdm=True,
        seed=0,
        read_truncated_verdicts=True,  # the random model never ends a rollout
    )
    trainer = SERLTrainer(
        model,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 2}),
        processing_class=tok,
        verdict_parser=lambda text: 1 + len(text) % 2,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    rank = trainer.accelerator.process_index
    params = list(trainer.model.parameters())
    record = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "checksum": [float(p.detach().double().sum()) for p in params],
        "changed": sum(not torch.equal(a, b.detach()) for a, b in zip(before, params)),
        "roles": [b["serl_role"].tolist() for b in trainer._buffered_inputs],
        "judgments": sum(len(g.slots) for g in trainer.last_judgments),
        "logs": trainer.state.log_history[0],
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, f"result-{rank}.json").write_text(json.dumps(record))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
