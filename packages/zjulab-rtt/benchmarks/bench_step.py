"""RTT-GRPO step time and peak memory against plain TRL GRPO on the same model and batch.

Each variant runs in its own child process (so peak memory is its own) on identical prompts,
rubrics and settings:

* ``grpo``: TRL ``GRPOTrainer`` with the rubric reward (the baseline);
* ``rtt-span``: ``RTTGRPOTrainer`` with relevance from the checkers' spans;
* ``rtt-disc``: ``RTTGRPOTrainer`` with a relevance discriminator whose backbone is the size of
  the policy (B·K extra forward passes per batch).

Figures are printed as ratios to ``grpo``. Step time is the median of the timed optimiser steps
(generation included: that is what a user waits for), as wall-clock time and as the process's
CPU time; on a shared CPU machine the CPU time is the steadier figure (run with
``OMP_NUM_THREADS=1``). Peak memory is CUDA's
``max_memory_allocated`` on a GPU, and the growth of the process's peak RSS during training on
CPU.

    python bench_step.py --quick          # CI-sized: tiny model, 3 timed steps
    python bench_step.py                  # larger tiny model, 8 timed steps
    python bench_step.py --model HuggingFaceTB/SmolLM2-135M-Instruct --device cuda
    python bench_step.py --quick --completion-length 2048 --full-length --variants grpo,rtt-span
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import tempfile
import time
from typing import Any

PROMPTS = [
    "List three fruits you like. Do not use any commas.",
    "Describe the sea in one sentence and use the word blue.",
    "Write a short note to a friend in lowercase letters only.",
    "Name two cities and put each in square brackets.",
]


def _rubrics() -> list[str]:
    from zjulab.rtt import Rubric

    return [
        Rubric.check("punctuation:no_comma").to_json(),
        Rubric.check("keywords:existence", keywords=["blue"]).to_json(),
        Rubric.check("change_case:english_lowercase").to_json(),
    ]


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if platform.system() != "Darwin" else peak / 2**20


def _model(cfg: dict[str, Any]) -> tuple[Any, Any]:
    if cfg["model"]:
        from zjulab.common.loading import load_causal_lm, load_tokenizer

        tok = load_tokenizer(cfg["model"])
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return load_causal_lm(cfg["model"], device="cpu", dtype="float32"), tok
    from zjulab.common.testing import tiny_causal_lm

    return tiny_causal_lm(0, hidden_size=cfg["hidden"], num_layers=cfg["layers"])


def _run(variant: str, cfg: dict[str, Any], queue: Any) -> None:
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from zjulab.rtt import RelevanceDiscriminator, RTTConfig, RTTGRPOTrainer, RubricReward, SpanRelevance

    torch.manual_seed(0)
    torch.set_num_threads(cfg["threads"])
    model, tok = _model(cfg)
    cuda = cfg["device"].startswith("cuda")
    rows = [{"prompt": [{"role": "user", "content": p}], "rubrics": _rubrics()} for p in PROMPTS]
    times: list[float] = []
    cpu_times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()
            self.c = time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)
            cpu_times.append(time.process_time() - self.c)

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=cfg["generations"] * cfg["prompts_per_step"],
            num_generations=cfg["generations"],
            max_completion_length=cfg["completion_length"],
            max_steps=cfg["steps"] + 1,
            learning_rate=1e-5,
            report_to="none",
            save_strategy="no",
            use_cpu=not cuda,
            bf16=cuda,
            seed=0,
            disable_tqdm=True,
            logging_steps=1000,
            gradient_checkpointing=False,
            # with --full-length every response runs to max_completion_length (no early EOS)
            generation_kwargs={"min_new_tokens": cfg["completion_length"]} if cfg["full_length"] else None,
        )
        common = {"args": args, "train_dataset": Dataset.from_list(rows * 8), "processing_class": tok}
        if variant == "grpo":
            trainer: Any = GRPOTrainer(model=model, reward_funcs=[RubricReward(aggregate="rate")], **common)
        else:
            if variant == "rtt-span":
                relevance: Any = SpanRelevance()
            else:
                backbone, _ = _model(cfg)
                relevance = RelevanceDiscriminator.from_causal_lm(backbone, tok, max_length=512)
                relevance = relevance.to(cfg["device"]).eval()
            trainer = RTTGRPOTrainer(
                model, RubricReward(aggregate="rate"), relevance, RTTConfig(lam=0.5), **common
            )
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(Clock())
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rss0 = _rss_mib()
        trainer.train()
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = max(_peak_rss_mib() - rss0, 0.0)
    queue.put(
        {
            "variant": variant,
            "step_s": statistics.median(times[1:]),
            "cpu_s": statistics.median(cpu_times[1:]),
            "peak_mib": peak,
            "steps": len(times) - 1,
        }
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small CI run")
    p.add_argument("--full", action="store_true", help="(default) the larger run")
    p.add_argument("--model", default=None, help="policy hub id or path instead of the tiny model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--steps", type=int, default=None, help="timed steps (after one warm-up)")
    p.add_argument("--completion-length", type=int, default=None, help="max new tokens per response")
    p.add_argument("--full-length", action="store_true", help="generate exactly --completion-length tokens")
    p.add_argument("--variants", default="grpo,rtt-span,rtt-disc", help="comma-separated (grpo first)")
    ns = p.parse_args()
    cfg = {
        "model": ns.model,
        "device": ns.device,
        "threads": ns.threads,
        "hidden": 64 if ns.quick else 256,
        "layers": 2 if ns.quick else 4,
        "generations": 4,
        "prompts_per_step": 2,
        "completion_length": ns.completion_length or (16 if ns.quick else 48),
        "steps": ns.steps or (3 if ns.quick else 8),
        "full_length": ns.full_length,
    }
    ctx = mp.get_context("spawn")
    results = {}
    for variant in ns.variants.split(","):
        q = ctx.Queue()
        proc = ctx.Process(target=_run, args=(variant, cfg, q))
        proc.start()
        results[variant] = q.get()
        proc.join()
    base = results["grpo"]
    print(json.dumps({"config": cfg}, indent=None))
    print(
        f"{'variant':10s} {'wall s':>8s} {'x GRPO':>7s} {'CPU s':>8s} {'x GRPO':>7s} {'peak MiB':>9s} {'x GRPO':>7s}"
    )
    for name, r in results.items():
        t_ratio = r["step_s"] / base["step_s"]
        c_ratio = r["cpu_s"] / base["cpu_s"]
        m_ratio = r["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else float("nan")
        print(
            f"{name:10s} {r['step_s']:8.3f} {t_ratio:7.2f} {r['cpu_s']:8.3f} {c_ratio:7.2f} "
            f"{r['peak_mib']:9.1f} {m_ratio:7.2f}"
        )


if __name__ == "__main__":
    main()
