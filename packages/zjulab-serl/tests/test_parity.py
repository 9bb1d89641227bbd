"""Parity with the authors' released code (AlwaysOu/SERL, commit d32c960a18f77ff31b07520cf2b35af3274695f4).

The functions prefixed ``ref_`` below are independent re-statements of what the authors' code
computes (``trl/reward_utils.py``: ``rewards_actor`` and ``rewards_judge``; ``trl/data_utils.py``:
``extract_boxes``; ``trl/trainer/SERL_trainer.py``: the group advantages and the alpha/beta
schedule), written from their behaviour in the authors' data layout (a list of judge prompts, each
with the pair of indices it shows, and the judge's boxed string), not copied. The library is
checked against them on thousands of random groups.
"""

import random
import re
from fractions import Fraction

import numpy as np
import pytest

from zjulab.serl import (
    actor_rewards,
    build_pairs,
    copeland_rewards,
    group_advantages,
    judge_rewards,
    length_controlled_rewards,
    loss_weights,
    parse_verdict,
)

AUTHORS_COMMIT = "d32c960a18f77ff31b07520cf2b35af3274695f4"


# ----------------------------------------------------------------------------- references


def ref_judge_layout(n: int, k: int) -> list[tuple[int, int]]:
    """The authors' judge prompts of one group: per pair (i < j), K/2 showing (i, j) then K/2 showing (j, i)."""
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            out += [(i, j)] * (k // 2) + [(j, i)] * (k // 2)
    return out


def ref_actor(lengths, layout, boxes, cast=float):
    """Authors' actor reward: a win of `a` over `o` adds len(o)/len(a) when 0.8*len(o) < len(a) < 1.2*len(o),
    the sum divided by the number of comparisons one completion takes part in."""
    n = len(lengths)
    per_completion = len(layout) // n * 2
    out = []
    for i in range(n):
        total = cast(0)
        for (first, second), box in zip(layout, boxes):
            if i not in (first, second) or box not in ("1", "2"):
                continue
            winner, other = (first, second) if box == "1" else (second, first)
            if winner != i:
                continue
            lw, lo = lengths[winner], lengths[other]
            if cast(lo) * cast(Fraction(12, 10)) > lw and cast(lo) * cast(Fraction(8, 10)) < lw:
                total += cast(lo) / cast(lw)
        out.append(total / per_completion)
    return out


def ref_judge(layout, boxes, actor):
    """Authors' judge reward: -1 for a box that is not "1"/"2", 0 when the two actor rewards are equal,
    else +1 when the picked completion has the larger actor reward and -1 otherwise."""
    out = []
    for (first, second), box in zip(layout, boxes):
        if box not in ("1", "2"):
            out.append(-1)
            continue
        w, lo = (first, second) if box == "1" else (second, first)
        if actor[w] == actor[lo]:
            out.append(0)
        else:
            out.append(1 if actor[w] - actor[lo] > 0 else -1)
    return out


def ref_first_box(text):
    """Authors' verdict reading: the content of the first \\boxed{...} (no nesting) anywhere in the text."""
    m = re.search(r"\\boxed\{([^}]*)\}", text)
    return m.group(1) if m else None


def ref_advantages(rewards, group, scale=True):
    """Authors' advantages: (r - group mean) / (unbiased group std + 1e-4)."""
    r = [float(x) for x in rewards]
    out = []
    for g in range(0, len(r), group):
        chunk = r[g : g + group]
        mean = sum(chunk) / len(chunk)
        std = (sum((x - mean) ** 2 for x in chunk) / (len(chunk) - 1)) ** 0.5
        out += [(x - mean) / (std + 1e-4) if scale else x - mean for x in chunk]
    return out


def ref_schedule(epoch, num_epochs):
    alpha = min(epoch / num_epochs, 0.5)
    return alpha, max(1 - alpha, 0.5)


def to_verdict(box):
    return {"1": 1, "2": 2}.get(box)


def random_groups(count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.randint(2, 7)
        k = rng.choice([2, 2, 4, 6])
        base = rng.randint(1, 80)
        # lengths clustered around a base so that many pairs sit near the band edges, plus zeros
        lengths = [max(0, base + rng.randint(-base // 3 - 2, base // 3 + 2)) for _ in range(n)]
        if rng.random() < 0.1:
            lengths[rng.randrange(n)] = 0
        layout = ref_judge_layout(n, k)
        boxes = [rng.choice(["1", "2", "1", "2", None, "3"]) for _ in layout]
        yield n, k, lengths, layout, boxes


# ----------------------------------------------------------------------------- tests


def test_issue_example_authors_band():
    slots = build_pairs(2, 2)
    # the 12-word answer wins both judgments; authors: 0.8 * 10 < 12 < 1.2 * 10 fails (12 is not < 12),
    # so nothing counts. The winner-relative band (0.8 * 12 < 10 < 1.2 * 12) counts both wins.
    assert length_controlled_rewards([10, 12], slots, [2, 1]).tolist() == [0.0, 0.0]
    old = length_controlled_rewards([10, 12], slots, [2, 1], band_reference="winner")
    assert old.tolist() == pytest.approx([0.0, 2 * (10 / 12) / 2])
    assert ref_actor([10, 12], ref_judge_layout(2, 2), ["2", "1"]) == [0.0, 0.0]


def test_layout_matches_authors():
    for n in range(2, 7):
        for k in (2, 4, 6):
            assert [(s.first, s.second) for s in build_pairs(n, k)] == ref_judge_layout(n, k)


def test_actor_and_judge_rewards_match_authors_on_random_groups():
    checked = 0
    for n, k, lengths, layout, boxes in random_groups(2000, seed=7):
        slots = build_pairs(n, k)
        verdicts = [to_verdict(b) for b in boxes]
        ours = length_controlled_rewards(lengths, slots, verdicts)
        ref = ref_actor(lengths, layout, boxes)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
        # with exact comparison the judge rewards agree everywhere
        assert judge_rewards(slots, verdicts, ours, tol=0.0).tolist() == ref_judge(layout, boxes, ref)
        checked += 1
    assert checked == 2000


def test_default_tie_tolerance_only_differs_on_exact_ties():
    """The default tol=1e-9 calls a pair tied where float rounding separates mathematically equal rewards."""
    differing = 0
    for n, k, lengths, layout, boxes in random_groups(2000, seed=11):
        slots = build_pairs(n, k)
        verdicts = [to_verdict(b) for b in boxes]
        ours = length_controlled_rewards(lengths, slots, verdicts)
        exact = ref_actor(lengths, layout, boxes, cast=Fraction)
        ref = ref_judge(layout, boxes, ref_actor(lengths, layout, boxes))
        got = judge_rewards(slots, verdicts, ours).tolist()
        assert got == ref_judge(layout, boxes, exact)  # the default is right in exact arithmetic
        differing += sum(a != b for a, b in zip(got, ref))
    # a constructed group where they do: R(0) = (6/6 + 7/6) / 10 and R(1) = (13/12 + 13/12) / 10 are
    # equal fractions, unequal floats; the judgment "0 beats 1" is a tie, the authors' code says -1 or +1
    lengths = [6, 12, 6, 7, 13, 13]
    layout = ref_judge_layout(6, 2)
    boxes = [None] * len(layout)
    for shown in ((0, 1), (0, 2), (0, 3), (1, 4), (1, 5)):
        boxes[layout.index(shown)] = "1"
    ref_actor_float = ref_actor(lengths, layout, boxes)
    assert ref_actor_float[0] != ref_actor_float[1]
    assert (
        ref_actor(lengths, layout, boxes, cast=Fraction)[0]
        == ref_actor(lengths, layout, boxes, cast=Fraction)[1]
    )
    slots = build_pairs(6, 2)
    ours = length_controlled_rewards(lengths, slots, [to_verdict(b) for b in boxes])
    k = layout.index((0, 1))
    assert judge_rewards(slots, [to_verdict(b) for b in boxes], ours)[k] == 0.0
    assert ref_judge(layout, boxes, ref_actor_float)[k] != 0


def test_winner_band_option_is_the_mirror_rule():
    rng = random.Random(3)
    for _ in range(300):
        n, k = rng.randint(2, 5), 2
        lengths = [rng.randint(1, 40) for _ in range(n)]
        slots = build_pairs(n, k)
        verdicts = [rng.choice([1, 2, None]) for _ in slots]
        got = length_controlled_rewards(lengths, slots, verdicts, band_reference="winner")
        want = np.zeros(n)
        for s, v in zip(slots, verdicts):
            if v is None:
                continue
            w, lo = s.winner(v), s.loser(v)
            if 0.8 * lengths[w] < lengths[lo] < 1.2 * lengths[w]:
                want[w] += lengths[lo] / lengths[w]
        np.testing.assert_allclose(got, want / ((n - 1) * k), atol=1e-12)


def test_copeland_matches_a_pairwise_majority_reference():
    """Plain Copeland is not in the authors' code (their actor reward is the length-controlled one);
    checked against an independent pairwise-majority count."""
    for n, k, lengths, layout, boxes in random_groups(1000, seed=5):
        slots = build_pairs(n, k)
        verdicts = [to_verdict(b) for b in boxes]
        votes = {}
        for (f, s), b in zip(layout, boxes):
            if b in ("1", "2"):
                w, lo = (f, s) if b == "1" else (s, f)
                votes[(w, lo)] = votes.get((w, lo), 0) + 1
        want = []
        for i in range(n):
            score = 0
            for j in range(n):
                if j != i:
                    a, b = votes.get((i, j), 0), votes.get((j, i), 0)
                    score += (a > b) - (a < b)
            want.append(score / (n - 1))
        np.testing.assert_allclose(copeland_rewards(n, slots, verdicts), want, atol=1e-12)
        np.testing.assert_allclose(actor_rewards(lengths, slots, verdicts, mode="copeland"), want, atol=1e-12)


def test_advantages_match_authors():
    rng = np.random.default_rng(0)
    for _ in range(1000):
        g = int(rng.integers(2, 9))
        r = rng.choice([-1.0, 0.0, 1.0, 0.25, 1.1], size=g * int(rng.integers(1, 4)))
        for scale in (True, False):
            np.testing.assert_allclose(
                group_advantages(r, g, scale=scale), ref_advantages(r, g, scale), atol=1e-9
            )


def test_schedule_matches_authors():
    rng = random.Random(1)
    for _ in range(1000):
        num = rng.choice([1, 2, 3, 5]) * rng.random() + 0.1
        epoch = rng.random() * num * 1.2
        assert loss_weights(epoch, num) == pytest.approx(ref_schedule(epoch, num), abs=1e-12)


# Judge outputs whose reading both sides agree on (the boxed format the prompt asks for) and the
# deliberate deviations, with the authors' reading next to ours.
AGREE = [
    "\\boxed{1}",
    "\\boxed{2}",
    "Answer 2 addresses both parts of the request. \\boxed{2}",
    "After comparing, \\boxed{1}",
    "<think>\nAnswer 1 is shorter but correct.\n</think>\n\n\\boxed{1}",
    "No box at all, Answer 1 is better.",
    "\\boxed{3}",
]
DEVIATIONS = [
    # (output, authors' verdict, ours, why)
    ("\\boxed{1} ... on reflection, \\boxed{2}", 1, 2, "the last box is the final answer"),
    ("<think>\\boxed{1} if Answer 1 is better, \\boxed{2} if", 1, None, "unfinished reasoning"),
    ("<think>maybe \\boxed{2}?</think>\n\nFinal: \\boxed{1}", 2, 1, "a box inside finished reasoning"),
    ("\\boxed{\\text{2}}", None, 2, "LaTeX wrapper"),
    ("\\boxed{ 1 }", None, 1, "spaces"),
]


@pytest.mark.parametrize("text", AGREE)
def test_verdicts_agree_with_authors_on_the_requested_format(text):
    assert parse_verdict(text) == to_verdict(ref_first_box(text))


@pytest.mark.parametrize("text,authors,ours,why", DEVIATIONS)
def test_documented_verdict_deviations(text, authors, ours, why):
    assert to_verdict(ref_first_box(text)) == authors
    assert parse_verdict(text) == ours
