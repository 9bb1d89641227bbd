"""Token character offsets: one pass over the fast tokenizer's offset mapping vs decoding every prefix.

``SpanRelevance`` needs each policy token's character range in the decoded response, once per
(response, rubric). The exact reference decodes every prefix (O(T²)); the default reads the fast
tokenizer's offset mapping in one pass. Both are run on the same ids in this process and their
offsets compared; figures are the median of ``--repeats`` runs and the ratio slow / fast.

    python bench_offsets.py                       # SmolLM2 tokenizer (embedded), T = 512/2048/8192
    python bench_offsets.py --tokenizer tiny      # the tiny test tokenizer
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

WORDS = [
    "the",
    "blue",
    "sea",
    "was",
    "calm",
    ",",
    "and",
    "the",
    "moon",
    "rose",
    "over",
    "a",
    "quiet",
    "town",
    ";",
    "we",
    "walked",
    "home",
    ",",
    "talking",
    "about",
    "rain",
    ",",
    "tea",
    ",",
    "books",
    "and",
    "3",
    "small",
    "dogs",
    ".",
    "Café",
    "déjà",
    "vu",
    "😀",
    "中文",
    "!",
    "(",
    "done",
    ")",
    "\n",
]


def _tokenizer(name: str) -> tuple[Any, str]:
    if name == "tiny":
        from zjulab.common.testing import tiny_tokenizer

        return tiny_tokenizer(), "tiny test tokenizer (byte-level BPE, 512 tokens)"
    from zjulab.common.defaults import default_chat_model_path
    from zjulab.common.loading import load_tokenizer

    return load_tokenizer(str(default_chat_model_path())), "SmolLM2-135M-Instruct tokenizer (embedded)"


def _ids(tok: Any, length: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    ids: list[int] = []
    while len(ids) < length:
        text = " ".join(rng.choice(WORDS) for _ in range(64))
        ids += tok(text, add_special_tokens=False)["input_ids"]
    # cut at a whole-token boundary that re-encodes to itself (a real response ends somewhere)
    text = tok.decode(ids[:length], skip_special_tokens=True)
    return tok(text, add_special_tokens=False)["input_ids"][:length]


def _time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "tiny"])
    ap.add_argument("--lengths", default="512,2048,8192")
    ap.add_argument("--repeats", type=int, default=3)
    ns = ap.parse_args()
    from zjulab.rtt.relevance import _fast_offsets, token_char_offsets, token_char_offsets_slow

    tok, name = _tokenizer(ns.tokenizer)
    rows = []
    for length in (int(x) for x in ns.lengths.split(",")):
        ids = _ids(tok, length)
        assert _fast_offsets(ids, tok) is not None, "the one-pass path was not taken"
        equal = token_char_offsets(ids, tok) == token_char_offsets_slow(ids, tok)
        slow = _time(lambda ids=ids: token_char_offsets_slow(ids, tok), 1 if length > 4096 else ns.repeats)
        fast = _time(lambda ids=ids: token_char_offsets(ids, tok), ns.repeats * 5)
        rows.append({"T": len(ids), "slow_s": slow, "fast_s": fast, "speedup": slow / fast, "equal": equal})
    print(f"tokenizer: {name}")
    print("| T | prefix decoding s | offset mapping s | speed-up | equal offsets |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['T']} | {r['slow_s']:.4f} | {r['fast_s']:.5f} | {r['speedup']:.0f}× | {r['equal']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
