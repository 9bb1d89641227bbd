"""LoCoMo evidence recall@5/@10 (and optional F1) of FluxMem against flat embedding RAG.

Both systems use the embedded MiniLM-L6 encoder; FluxMem runs its non-LLM write path (hybrid
linking, adjacency links, graph-propagated search). F1 needs the embedded SmolLM2-135M chat
model and takes seconds per question on CPU, so it is limited by --f1-questions (per
conversation) and off by default.

    python benchmarks/bench_locomo.py --data ../shared/data/locomo/locomo10.json          # full
    python benchmarks/bench_locomo.py --data ../shared/data/locomo/locomo10.json --quick  # 1 conversation
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

from zjulab.common.defaults import default_chat_model, default_encoder
from zjulab.fluxmem import FluxMemConfig
from zjulab.fluxmem.locomo import evaluate_locomo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/locomo/locomo10.json")
    )
    ap.add_argument("--quick", action="store_true", help="first conversation only")
    ap.add_argument("--limit", type=int, default=None, help="first N conversations")
    ap.add_argument("--f1-questions", type=int, default=0, help="questions per conversation answered for F1")
    ap.add_argument("--ablation", action="store_true", help="also score FluxMem without link propagation")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the report here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    limit = 1 if args.quick else args.limit
    encoder = default_encoder(device=args.device)
    chat = default_chat_model(device=args.device, max_new_tokens=48) if args.f1_questions else None
    t0 = time.perf_counter()
    done = []
    rep = evaluate_locomo(
        args.data,
        encoder,
        chat_model=chat,
        config=FluxMemConfig(),
        limit=limit,
        f1_questions=args.f1_questions,
        ablation=args.ablation,
        on_conversation=lambda cid: (
            done.append(cid),
            print(f"  done {cid} ({time.perf_counter() - t0:.0f}s)", flush=True),
        ),
    )
    wall = time.perf_counter() - t0
    print(
        f"\nLoCoMo: {len(rep.conversations)} conversations, machine: {platform.processor() or platform.machine()}, wall {wall:.0f}s"
    )
    print(rep.table())
    for k in sorted(rep.recall["fluxmem"]):
        f, b = rep.recall["fluxmem"][k][0], rep.recall["flat_rag"][k][0]
        print(
            f"recall@{k} cats 1-4: fluxmem {100 * f:.1f} vs flat RAG {100 * b:.1f}: {100 * (f - b):+.1f} points, ratio {f / b:.3f}"
        )
        if "fluxmem_no_graph" in rep.recall:
            g = rep.recall["fluxmem_no_graph"][k][0]
            print(f"  ablation without link propagation: {100 * g:.1f} ({100 * (g - b):+.1f} vs flat RAG)")
    n = rep.counts.get(0, 1)
    s = rep.seconds
    print(
        f"search per question: fluxmem {1000 * s['fluxmem_search'] / n:.1f} ms, flat {1000 * s['flat_search'] / n:.1f} ms; "
        f"ingest: fluxmem {s['fluxmem_ingest']:.0f}s, flat {s['flat_ingest']:.0f}s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "recall": rep.recall,
                    "f1": rep.f1,
                    "counts": rep.counts,
                    "seconds": rep.seconds,
                    "conversations": rep.conversations,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
