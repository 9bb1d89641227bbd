"""Pipeline throughput (items/s) against concurrency.

Two models: a local transformers model (``--model tiny``: a random 2-layer Qwen2 from
zjulab.common.testing; ``--model embedded``: SmolLM2-135M-Instruct) and a simulated remote
model that answers after a fixed latency (what an OpenAI-compatible server looks like to the
pipeline). Each run pushes the same instructions through the answer stage with a fresh
checkpoint directory; figures are ratios against concurrency 1 of the same model.

    python benchmarks/bench_pipeline.py --quick
    python benchmarks/bench_pipeline.py --model embedded
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zjulab.common.chat import TransformersChatModel, Usage
from zjulab.conifer import AnswerStage, Pipeline, PipelineConfig


class LatencyModel:
    """Answers after ``latency`` seconds per generate call (a remote server stand-in)."""

    def __init__(self, latency):
        self.latency = latency
        self.usage = Usage()

    def generate(self, conversations, **sampling):
        time.sleep(self.latency)
        self.usage.add(len(conversations), 0, 0)
        return [f"answer {i}" for i in range(len(conversations))]


def records(n):
    return [
        {"id": f"r{i}", "instruction": f"Describe item number {i} in two short sentences.", "level": 1}
        for i in range(n)
    ]


def throughput(model, n, concurrency, batch_size, max_new_tokens):
    with tempfile.TemporaryDirectory() as d:
        cfg = PipelineConfig(
            out_dir=d,
            concurrency=concurrency,
            batch_size=batch_size,
            answer_max_new_tokens=max_new_tokens,
            show_progress=False,
        )
        t0 = time.perf_counter()
        res = Pipeline(model, None, cfg, stages=[AnswerStage(system=None)]).run(records(n))
        dt = time.perf_counter() - t0
    return n / dt, res.stats[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", choices=["tiny", "embedded"], default=None)
    args = ap.parse_args()
    model_kind = args.model or ("tiny" if args.quick else "embedded")
    n = 16 if args.quick else 48
    concs = [1, 2, 4]
    if model_kind == "tiny":
        from zjulab.common.testing import tiny_causal_lm

        m, tok = tiny_causal_lm(seed=0)
        local = TransformersChatModel(m, tok, device="cpu", batch_size=4)
    else:
        from zjulab.common.defaults import default_chat_model

        local = default_chat_model(device="cpu", max_new_tokens=32)
        local.batch_size = 4
    print(f"answer stage, {n} items, batch 4, 2 CPU cores shared")
    for name, model, max_new in [
        (f"local:{model_kind}", local, 16 if args.quick else 32),
        ("remote:latency-0.2s", LatencyModel(0.2), 16),
    ]:
        throughput(model, 4, 1, 4, max_new)  # warm-up (first-call allocations)
        base = None
        for c in concs:
            ips, st = throughput(model, n, c, 4, max_new)
            base = base or ips
            print(
                f"{name:<22} concurrency={c}  {ips:8.2f} items/s  x{ips / base:4.2f} vs concurrency 1  "
                f"(tokens out {st.usage.get('completion_tokens', 0)})"
            )


if __name__ == "__main__":
    main()
