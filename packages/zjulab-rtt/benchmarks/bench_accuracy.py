"""Rubric-level and instruction-level accuracy after GRPO vs RTT-GRPO on IFEval prompts.

Both runs start from the same policy, train for the same number of steps on the same IFEval
prompts (verifiable rubrics, all-or-nothing reward), and are evaluated greedily on held-out
IFEval prompts. RTT-GRPO takes its relevance from a saved discriminator (``--discriminator``)
or, by default, from the spans the checkers report.

    python bench_accuracy.py --quick      # tiny random model, a few steps: checks the pipeline only
    python bench_accuracy.py --model Qwen/Qwen2.5-0.5B-Instruct --device cuda --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _find_ifeval() -> Path:
    env = os.environ.get("ZJULAB_SHARED_DATA")
    roots = [Path(env)] if env else []
    here = Path(__file__).resolve()
    roots += [p / "shared" / "data" for p in here.parents]
    for r in roots:
        f = r / "ifeval" / "input_data.jsonl"
        if f.is_file():
            return f
    raise SystemExit("IFEval data not found: set ZJULAB_SHARED_DATA to the shared/data folder")


def _policy(ns: argparse.Namespace) -> tuple[Any, Any]:
    if ns.model is None:
        from zjulab.common.testing import tiny_causal_lm

        return tiny_causal_lm(0)
    from zjulab.common.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(ns.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return load_causal_lm(ns.model, device=ns.device, dtype="auto"), tok


def _evaluate(model: Any, tok: Any, prompts: list[Any], ns: argparse.Namespace) -> dict[str, float]:
    from zjulab.common.chat import TransformersChatModel
    from zjulab.rtt import rubric_accuracy

    chat = TransformersChatModel(
        model, tok, device=ns.device, batch_size=ns.eval_batch_size, max_new_tokens=ns.max_new_tokens
    )
    answers = chat.generate([[{"role": "user", "content": p.prompt}] for p in prompts])
    acc = rubric_accuracy([p.prompt for p in prompts], answers, [p.rubrics for p in prompts])
    return {"instruction_level": acc.instruction_level, "rubric_level": acc.rubric_level}


def _train(variant: str, train: list[Any], ns: argparse.Namespace) -> tuple[Any, Any, float]:
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from zjulab.common.seeding import seed_everything
    from zjulab.rtt import (
        RelevanceDiscriminator,
        RTTConfig,
        RTTGRPOTrainer,
        RubricReward,
        SpanRelevance,
        to_dataset_rows,
    )

    seed_everything(ns.seed)
    model, tok = _policy(ns)
    cpu = not ns.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=ns.num_generations * ns.prompts_per_step,
            num_generations=ns.num_generations,
            max_completion_length=ns.max_new_tokens,
            max_steps=ns.steps,
            learning_rate=ns.lr,
            report_to="none",
            save_strategy="no",
            use_cpu=cpu,
            bf16=not cpu,
            seed=ns.seed,
            disable_tqdm=True,
            logging_steps=max(1, ns.steps // 10),
            gradient_checkpointing=not cpu,
        )
        common = {
            "args": args,
            "train_dataset": Dataset.from_list(to_dataset_rows(train)),
            "processing_class": tok,
        }
        if variant == "grpo":
            trainer: Any = GRPOTrainer(model=model, reward_funcs=[RubricReward(aggregate="all")], **common)
        else:
            relevance: Any = (
                RelevanceDiscriminator.load(ns.discriminator, device=ns.device)
                if ns.discriminator
                else SpanRelevance()
            )
            trainer = RTTGRPOTrainer(
                model, RubricReward(aggregate="all"), relevance, RTTConfig(lam=ns.lam), **common
            )
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        t0 = time.perf_counter()
        trainer.train()
        return trainer.model, tok, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny random model, 2 steps, 8 eval prompts")
    p.add_argument("--full", action="store_true", help="(default) the settings below")
    p.add_argument("--model", default=None, help="policy hub id or path (default: tiny random model)")
    p.add_argument("--discriminator", default=None, help="saved discriminator for RTT-GRPO")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--train-prompts", type=int, default=300)
    p.add_argument("--eval-prompts", type=int, default=100)
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    ns = p.parse_args()
    if ns.quick:
        ns.steps, ns.num_generations, ns.prompts_per_step, ns.max_new_tokens = 2, 2, 1, 8
        ns.train_prompts, ns.eval_prompts = 8, 8

    from zjulab.rtt import load_ifeval

    prompts = load_ifeval(_find_ifeval())
    train, held = prompts[: ns.train_prompts], prompts[-ns.eval_prompts :]
    results: dict[str, Any] = {}
    model, tok = _policy(ns)
    results["base"] = _evaluate(model, tok, held, ns)
    del model
    for variant in ("grpo", "rtt-grpo"):
        model, tok, seconds = _train(variant, train, ns)
        results[variant] = {**_evaluate(model, tok, held, ns), "train_s": round(seconds, 1)}
        del model
    print(
        json.dumps(
            {
                "settings": {k: v for k, v in vars(ns).items() if k not in ("quick", "full")},
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
