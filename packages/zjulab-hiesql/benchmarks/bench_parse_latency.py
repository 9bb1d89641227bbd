"""Parse latency per turn on SParC dev turns (CPU).

Baseline in the same process: building the linking graph and the encoder input of the turn
(the work every parse does before any model runs). Reported: milliseconds per turn and the
multiple of the baseline for (1) the neural parser with tiny random-weight models (the cost of
the pipeline itself: encoder + relation-aware layer + 4-beam decoding + validity guard), and
(2) with ``--llm``, the LLM path on the embedded SmolLM2-135M (2 candidates).

    python benchmarks/bench_parse_latency.py [--quick] [--llm] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from zjulab.common.testing import tiny_causal_lm, tiny_encoder
from zjulab.hiesql import (
    DecoderConfig,
    EncoderConfig,
    HieSqlParser,
    LLMParser,
    ParserConfig,
    build_encoder_input,
    build_linking_graph,
    load_interactions,
    load_tables,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import find_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--llm", action="store_true", help="also time the LLM path (embedded SmolLM2)")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = find_data(args.data)
    schemas = load_tables(data / "sparc" / "tables.json")
    inters = load_interactions(data / "sparc" / "dev.json")[: 8 if args.quick else 40]
    turns = [
        (schemas[i.db_id], t.utterance, [x.utterance for x in i.turns[:k]], i.turns[k - 1].sql if k else None)
        for i in inters
        for k, t in enumerate(i.turns)
    ]
    enc, etok = tiny_encoder()
    lm, ltok = tiny_causal_lm()
    cfg = ParserConfig(
        encoder=EncoderConfig(rat_heads=4, rat_layers=2),
        decoder=DecoderConfig(lora=True, num_beams=4, max_new_tokens=32),
    )
    parser = HieSqlParser.from_modules(enc, etok, lm, ltok, cfg)

    t0 = time.perf_counter()
    lengths = []
    for schema, u, h, s in turns:
        lengths.append(len(build_encoder_input(etok, build_linking_graph(schema, u, h, s), "history_sql")))
    base = (time.perf_counter() - t0) / len(turns)
    print(f"turns: {len(turns)}; mean encoder input length {sum(lengths) / len(lengths):.0f} tokens")
    print(f"{'what':44} {'ms/turn':>9} {'x baseline':>11}")
    print(f"{'baseline: linking graph + encoder input':44} {base * 1000:>9.1f} {1.0:>11.1f}")
    t0 = time.perf_counter()
    for schema, u, h, s in turns:
        parser.predict_turn(schema, u, h, s)
    dt = (time.perf_counter() - t0) / len(turns)
    print(f"{'HieSqlParser (tiny models, 4 beams, guard)':44} {dt * 1000:>9.1f} {dt / base:>11.1f}")
    if args.llm:
        from zjulab.common.defaults import default_chat_model

        llm = LLMParser(
            default_chat_model(device="cpu", max_new_tokens=48), num_candidates=2, max_new_tokens=48
        )
        sub = turns[:6]
        t0 = time.perf_counter()
        for schema, u, h, s in sub:
            llm.predict_turn(schema, u, h, s)
        dt = (time.perf_counter() - t0) / len(sub)
        print(f"{'LLMParser (SmolLM2-135M, 2 candidates)':44} {dt * 1000:>9.1f} {dt / base:>11.1f}")


if __name__ == "__main__":
    main()
