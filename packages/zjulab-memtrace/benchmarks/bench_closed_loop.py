"""Closed loop: attribute failures of a chat-model Mem0 pipeline, rewrite the guilty prompt, replay.

    python benchmarks/bench_closed_loop.py [--limit N] [--locomo PATH]

The Mem0-style pipeline answers LoCoMo questions with the embedded chat model (SmolLM2-135M)
as its ``generate`` step (HashingEncoder retrieval). Failed answers are attributed with the
evidence judge, the decisive errors are aggregated per operation, the same chat model proposes
a new prompt for the most-blamed operation from its failure cases, and every traced question is
replayed with the new prompt patched in. Accuracy before and after is printed.
"""

from __future__ import annotations

import argparse
import random
import time

from zjulab.common.testing import HashingEncoder
from zjulab.memtrace import EvidenceJudge, Gold, TracingError, attribute
from zjulab.memtrace.locomo import find_locomo, load_locomo
from zjulab.memtrace.matching import token_recall
from zjulab.memtrace.optimize import aggregate, evaluate_prompt_update, optimize_prompts
from zjulab.memtrace.pipelines import Mem0Pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20, help="questions")
    ap.add_argument("--locomo")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from zjulab.common.defaults import default_chat_model

    chat = default_chat_model(device=args.device)
    enc = HashingEncoder(512)
    pool = []
    for conv in load_locomo(find_locomo(args.locomo)):
        for qa in conv.qa:
            turn = conv.turn(qa.evidence[0]) if len(qa.evidence) == 1 else None
            if qa.category in (1, 4) and turn is not None and token_recall(qa.answer, turn.text) == 1.0:
                numbers = list(conv.sessions)
                i = numbers.index(turn.session)
                chosen = numbers[max(0, i - 1) : i + 2]
                pool.append(
                    (
                        [[t.line for t in conv.sessions[s]] for s in chosen],
                        Gold(qa.answer, (turn.line,), qa.question),
                    )
                )
    random.Random(0).shuffle(pool)
    pool = pool[: args.limit]

    t0 = time.perf_counter()
    runs = []
    for sessions, gold in pool:
        pipe = Mem0Pipeline(enc, chat=chat)
        _, trace = pipe.run(sessions, gold.question or "")
        runs.append((trace, gold))
    failures = []
    for trace, gold in runs:
        if not gold.is_correct(trace.final_value):
            failures.append((trace, attribute(trace, gold, EvidenceJudge())))
    summary = aggregate([a for _, a in failures])
    print(
        f"{len(runs)} questions, {len(failures)} wrong; decisive errors by operation: {dict(summary.by_operation)}"
    )
    print(f"by mode: {dict(summary.by_mode)}")
    try:
        update = optimize_prompts(failures, chat)
    except TracingError as exc:
        print(f"closed loop stops here: {exc} (nothing to rewrite; fix that operation instead)")
        return
    print(f"guilty operation: {update.op_name}; prompt changed: {update.changed}")
    print(f"old prompt: {update.old_prompt!r}")
    print(f"new prompt: {update.new_prompt!r}")
    ev = evaluate_prompt_update(runs, update)
    print(
        f"end-task accuracy {ev.correct_before}/{ev.n} -> {ev.correct_after}/{ev.n} "
        f"(delta {ev.delta:+.3f}, replay errors {ev.errors}); {time.perf_counter() - t0:.0f} s, "
        f"{chat.usage.calls} chat calls"
    )


if __name__ == "__main__":
    main()
