"""Held-out LoCoMo refinement: does feedback on one half of the questions help the other half?

Per conversation: ingest (FluxMem's non-LLM write path), give Stage II feedback on the failures
(gold evidence not all in the first 10 turns) of the even-numbered questions of categories 1-4,
then measure evidence recall@5/@10 of the odd-numbered (held-out) questions before and after,
next to flat RAG with the same encoder. See ``zjulab.fluxmem.locomo.heldout_refinement``.

    python benchmarks/bench_refinement.py --data ../shared/data/locomo/locomo10.json [--limit N]
    python benchmarks/bench_refinement.py --encoder minilm      # the embedded MiniLM ([torch])
"""

from __future__ import annotations

import argparse
import time

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem.locomo import heldout_refinement, load_locomo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/data/locomo/locomo10.json")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--encoder", choices=["hashing", "minilm"], default="hashing")
    args = ap.parse_args()
    samples = load_locomo(args.data)[: args.limit]
    if args.encoder == "minilm":
        from zjulab.common.defaults import default_encoder

        enc = default_encoder()
    else:
        enc = HashingEncoder(384)
    t0 = time.perf_counter()
    rep = heldout_refinement(samples, enc)
    print(f"{len(rep.conversations)} conversations, encoder {enc.model_id}, {time.perf_counter() - t0:.0f} s")
    print(rep.table())
    for s in ("train_before", "train_after"):
        print(s, {k: round(100 * v[0], 1) for k, v in rep.recall[s].items()})
    print(
        f"feedback on {rep.feedback_given} failures: +{rep.edges_added} / -{rep.edges_removed} edges, +{rep.nodes_added} units"
    )


if __name__ == "__main__":
    main()
