"""Encoder fine-tuning on the demo pool: mine hard negatives for the 40 training tasks, train
the embedded MiniLM with InfoNCE (τ = 0.05), and compare dense retrieval on the 44 held-out
tasks before and after, in the same process.

Usage: python benchmarks/bench_train_encoder.py [--epochs 1] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from zjulab.common.encoders import SentenceTransformerEncoder
from zjulab.skillrouter import (
    MiningConfig,
    RouterConfig,
    SkillRouter,
    TrainEncoderConfig,
    embedded_encoder,
    evaluate,
    format_table,
    load_demo_pool,
    mine_hard_negatives,
    train_encoder,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    pool = load_demo_pool()
    enc = embedded_encoder(device=args.device)
    cfg = RouterConfig(rerank=False)
    before = evaluate(SkillRouter(enc, None, cfg).index(pool.skills), pool.test, name="MiniLM (pretrained)")
    t = time.perf_counter()
    pairs = [(task.query, sorted(task.relevant)) for task in pool.train]
    examples = mine_hard_negatives(pairs, pool.skills, enc, MiningConfig())
    with tempfile.TemporaryDirectory() as out:
        tcfg = TrainEncoderConfig(
            output_dir=out, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr
        )
        res = train_encoder(enc.model, examples, tcfg, device=args.device)
        tuned = SentenceTransformerEncoder(res.model, device=args.device)
    tuned.model_id = "MiniLM (fine-tuned)"
    print(f"{len(examples)} training examples, {res.steps} steps, {time.perf_counter() - t:.0f}s")
    after = evaluate(SkillRouter(tuned, None, cfg).index(pool.skills), pool.test, name="MiniLM (fine-tuned)")
    print(format_table([before, after], ("Hit@1", "nDCG@10", "Recall@10", "MRR@10")))


if __name__ == "__main__":
    main()
