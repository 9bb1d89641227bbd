"""Recall of the contamination guard on paraphrased and extended IFEval prompts.

A held-back set is built from IFEval's 541 prompts with six deterministic rewrites per prompt
(what a curation model does to a prompt it has seen): the prompt with nine words appended
("extended", the case a plain overlap misses), wrapped in a request sentence ("wrapped"), with
every fifth word dropped and a few words swapped for synonyms ("reworded"), with its sentences
in reverse order ("reordered"), its first 70% with a new ending ("partial"), and with changed
case, curly quotes and full-width punctuation ("restyled"). Settings (n, threshold) are chosen on
the even-numbered prompts; recall is reported on the odd-numbered ones, which the choice never
saw. False positives are counted on instructions unrelated to IFEval: the authors' Conifer
samples (reframed questions, constrained questions at every level, format/number variants).

    python benchmarks/bench_contamination.py [--data /work/shared/data]
"""

import argparse
import json
import random
import re
import sys
from pathlib import Path

from zjulab.conifer import ContaminationGuard, FormatNumberStage

SYNONYMS = {
    "write": "compose",
    "answer": "response",
    "response": "reply",
    "words": "terms",
    "make": "create",
    "about": "on",
    "must": "should",
    "entire": "whole",
    "include": "contain",
    "story": "tale",
    "essay": "article",
    "short": "brief",
    "give": "provide",
    "use": "employ",
}
FILLER = ["and", "please", "keep", "it", "friendly", "since", "it", "is", "for", "my", "team"]


def variants(prompt: str, seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    words = prompt.split()
    reworded = [SYNONYMS.get(w.lower(), w) for i, w in enumerate(words) if i % 5 != 4]
    sentences = re.split(r"(?<=[.!?])\s+", prompt.strip())
    cut = max(1, int(len(words) * 0.7))
    restyled = (
        prompt.upper().replace('"', "\u201c").replace(",", "\uff0c").replace(".", "\uff0e").replace("  ", " ")
    )
    return {
        "extended": f"{prompt} {' '.join(rng.sample(FILLER, 9))}",
        "wrapped": f"I need help with the following task. {prompt} Thank you so much in advance!",
        "reworded": " ".join(reworded),
        "reordered": " ".join(reversed(sentences)) if len(sentences) > 1 else f"Here is my request: {prompt}",
        "partial": " ".join(words[:cut]) + " Make it suitable for beginners.",
        "restyled": restyled,
    }


def negatives(samples: Path) -> list[str]:
    out: list[str] = []
    for f in sorted(samples.glob("0[1-5]_*.json")):
        data = json.loads(f.read_text())
        stack = [data]
        while stack:
            x = stack.pop()
            if isinstance(x, dict):
                out.extend(k for k in x if len(k.split()) > 5)
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)
            elif isinstance(x, str) and len(x.split()) > 5:
                out.append(x)
    base = sorted(set(out))
    # the same instructions with two of this package's verifiable format/number constraints
    # appended (IFEval-like wording, the realistic false-positive risk)
    stage = FormatNumberStage(count=2, seed=1)
    with_checks = [
        stage.process({"id": f"n{i}", "instruction": t, "kind": "general"})[1]["instruction"]
        for i, t in enumerate(base)
    ]
    return base + with_checks


def old_overlap(prompts, n, threshold):
    """The previous score: shared n-grams divided by the *candidate's* n-gram count."""

    def grams(text):
        w = [x.lower() for x in re.findall(r"\w+", text)]
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    index = [grams(p) for p in prompts]

    class Old:
        def __init__(self):
            self.threshold = threshold

        def best_overlap(self, text):
            g = grams(text)
            if not g:
                return -1, 0.0
            scores = [len(g & p) / len(g) for p in index]
            j = max(range(len(scores)), key=scores.__getitem__)
            return j, scores[j]

    return Old()


def rates(guard, prompts, idx, negs):
    per: dict[str, list[int]] = {}
    for i in idx:
        for kind, text in variants(prompts[i], i).items():
            j, score = guard.best_overlap(text)
            per.setdefault(kind, []).append(int(score >= guard.threshold and j == i))
    fp = sum(guard.best_overlap(t)[1] >= guard.threshold for t in negs)
    recall = {k: sum(v) / len(v) for k, v in per.items()}
    return (
        recall,
        sum(sum(v) for v in per.values()) / sum(len(v) for v in per.values()),
        fp / max(len(negs), 1),
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data")
    args = ap.parse_args()
    data = Path(args.data)
    prompts = [
        json.loads(x)["prompt"] for x in (data / "ifeval" / "input_data.jsonl").read_text().splitlines()
    ]
    negs = negatives(data / "conifer" / "conifer_data_samples")
    tune, held = range(0, len(prompts), 2), range(1, len(prompts), 2)
    best = None
    for n in (3, 4, 5, 6, 8):
        for th in (0.3, 0.4, 0.5, 0.6, 0.7):
            guard = ContaminationGuard(prompts, n=n, threshold=th)
            _, rec, fpr = rates(guard, prompts, tune, negs)
            score = rec - 2 * fpr
            if best is None or score > best[0]:
                best = (score, n, th, rec, fpr)
    _, n, th, rec_tune, fpr_tune = best
    print(f"chosen on the tuning half: n={n}, threshold={th} (recall {rec_tune:.3f}, FPR {fpr_tune:.3f})")
    guards = {
        f"chosen n={n}, {th}": ContaminationGuard(prompts, n=n, threshold=th),
        "default n=3, 0.3": ContaminationGuard(prompts),
        "containment n=8, 0.5": ContaminationGuard(prompts, n=8, threshold=0.5),
        "old overlap n=8, 0.5": old_overlap(prompts, 8, 0.5),
    }
    for label, guard in guards.items():
        per, rec, fpr = rates(guard, prompts, held, negs)
        cells = ", ".join(f"{k} {v:.3f}" for k, v in per.items())
        print(
            f"{label:>22}: held-back recall {rec:.3f} ({cells}); FPR {fpr:.3f} on {len(negs)} Conifer texts"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
