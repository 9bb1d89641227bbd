import math

import numpy as np
import pytest

from zjulab.common.errors import ConfigError, InputError
from zjulab.serl import (
    JudgeConfig,
    JudgmentSlot,
    SERLConfigError,
    SERLInputError,
    actor_rewards,
    build_pairs,
    copeland_rewards,
    group_advantages,
    judge_diagnostics,
    judge_rewards,
    length_controlled_rewards,
    loss_weights,
    num_judge_prompts,
    verdict_matrix,
)

# N = 3, K = 2. Slots: (0,1) (1,0) | (0,2) (2,0) | (1,2) (2,1)
SLOTS = build_pairs(3, 2)
LENGTHS = [10, 11, 9]
VERDICTS = [1, 2, 2, None, 1, 2]
# A win counts when 0.8 * len(loser) < len(winner) < 1.2 * len(loser) (AlwaysOu/SERL's rewards_actor)
# and adds len(loser) / len(winner).
# slot0: 0 (10) beats 1 (11): 8.8 < 10 < 13.2         -> R0 += 11/10
# slot1: 0 beats 1 again                              -> R0 += 11/10
# slot2: 2 (9) beats 0 (10): 8 < 9 < 12               -> R2 += 10/9
# slot3: invalid                                      -> nothing
# slot4: 1 (11) beats 2 (9): 7.2 < 11 < 10.8 fails    -> nothing
# slot5: 1 beats 2 again, out of the band again       -> nothing
# M = (N - 1) * K = 4
EXPECTED_LC = [2.2 / 4, 0.0, (10 / 9) / 4]
# the winner-relative band (0.8 * len(winner) < len(loser) < 1.2 * len(winner)) counts slot4/5 too:
# 8.8 < 9 < 13.2 -> R1 += 2 * 9/11
EXPECTED_LC_WINNER = [2.2 / 4, 2 * (9 / 11) / 4, (10 / 9) / 4]


@pytest.mark.parametrize("n,k", [(2, 2), (3, 2), (4, 4), (5, 6)])
def test_pair_counts(n, k):
    slots = build_pairs(n, k)
    assert len(slots) == num_judge_prompts(n, k) == math.comb(n, 2) * k
    for i in range(n):  # every response is in (N-1)*K judgments, half of them shown first
        assert sum(i in (s.first, s.second) for s in slots) == (n - 1) * k
        assert sum(s.first == i for s in slots) == (n - 1) * k // 2
    for p in range(math.comb(n, 2)):  # the K slots of a pair are consecutive, K/2 per order
        block = slots[p * k : (p + 1) * k]
        assert {s.pair for s in block} == {p}
        assert len({(s.first, s.second) for s in block[: k // 2]}) == 1
        assert block[0].first == block[-1].second and block[0].second == block[-1].first


def test_pair_errors():
    with pytest.raises(SERLInputError, match="at least 2"):
        build_pairs(1, 2)
    with pytest.raises(SERLInputError, match="even"):
        build_pairs(3, 3)
    with pytest.raises(InputError):
        build_pairs(3, 0)


def test_length_controlled_hand_worked():
    r = length_controlled_rewards(LENGTHS, SLOTS, VERDICTS)
    assert r.tolist() == pytest.approx(EXPECTED_LC)
    # the same through actor_rewards, from the texts themselves
    texts = [" ".join(["w"] * n) for n in LENGTHS]
    assert actor_rewards(texts, SLOTS, VERDICTS).tolist() == pytest.approx(EXPECTED_LC)
    winner = length_controlled_rewards(LENGTHS, SLOTS, VERDICTS, band_reference="winner")
    assert winner.tolist() == pytest.approx(EXPECTED_LC_WINNER)
    with pytest.raises(SERLConfigError, match="loser"):
        length_controlled_rewards(LENGTHS, SLOTS, VERDICTS, band_reference="both")


def test_length_band_excludes_wins_outside():
    # response 1 is twice as long: its wins over 0 count for nothing, 0's wins over it neither
    slots = build_pairs(2, 2)
    assert length_controlled_rewards([10, 20], slots, [2, 1]).tolist() == [0.0, 0.0]
    # a wider band lets them count: 1 beats 0 twice at ratio 10/20
    assert length_controlled_rewards([10, 20], slots, [2, 1], band=(0.4, 2.5)).tolist() == pytest.approx(
        [0, 0.5]
    )
    # boundaries are exclusive: a 10-word winner over an 8-word loser is out (10 = 1.25 * 8), and so is
    # a 12-word winner over a 10-word loser (12 = 1.2 * 10)
    assert length_controlled_rewards([10, 12], slots, [2, 1]).tolist() == [0.0, 0.0]
    assert length_controlled_rewards([10, 8], slots, [1, 2]).tolist() == [0.0, 0.0]
    # an empty winner earns nothing
    assert length_controlled_rewards([0, 0], slots, [1, 1]).tolist() == [0.0, 0.0]


def test_losses_and_invalid_add_nothing():
    slots = build_pairs(2, 2)
    assert length_controlled_rewards([10, 10], slots, [None, None]).tolist() == [0.0, 0.0]
    assert copeland_rewards(2, slots, [None, None]).tolist() == [0.0, 0.0]


def test_copeland_cycle_and_tie():
    # the hand-worked verdicts form a cycle 0 > 1 > 2 > 0: every Copeland score is 0
    assert copeland_rewards(3, SLOTS, VERDICTS).tolist() == [0.0, 0.0, 0.0]
    # make (0, 2) a 1-1 tie: 0 beats 1 (+1), ties 2 -> 1/2; 1: -1 + 1 = 0; 2: tie, loses to 1 -> -1/2
    tied = [1, 2, 2, 2, 1, 2]
    assert copeland_rewards(3, SLOTS, tied).tolist() == [0.5, 0.0, -0.5]
    assert actor_rewards([5, 5, 5], SLOTS, tied, mode="copeland").tolist() == [0.5, 0.0, -0.5]


def test_verdict_matrix():
    w = verdict_matrix(3, SLOTS, VERDICTS)
    assert w.tolist() == [[0, 2, 0], [0, 0, 2], [1, 0, 0]]


def test_judge_rewards_hand_worked():
    ra = np.array(EXPECTED_LC)  # 0.55, 0, 0.278
    # picks 0>1 (+1), 0>1 (+1), 2>0 (-1), invalid (-1), 1>2 (-1), 1>2 (-1)
    assert judge_rewards(SLOTS, VERDICTS, ra).tolist() == [1, 1, -1, -1, -1, -1]
    ra_w = np.array(EXPECTED_LC_WINNER)  # 0.55, 0.409, 0.278: under the winner band 1>2 agrees
    assert judge_rewards(SLOTS, VERDICTS, ra_w).tolist() == [1, 1, -1, -1, 1, 1]
    # ties give 0, invalid stays -1
    assert judge_rewards(SLOTS, VERDICTS, [0.3, 0.3, 0.3]).tolist() == [0, 0, 0, -1, 0, 0]


def test_diagnostics_hand_worked():
    d = judge_diagnostics(SLOTS, VERDICTS, EXPECTED_LC)
    assert d.invalid_rate == pytest.approx(1 / 6)
    # pair (0,1) both orders name 0; pair (1,2) both name 1; pair (0,2) has an invalid half
    assert (d.order_pairs, d.consistent_pairs) == (2, 2)
    assert d.consistency_rate == 1.0
    assert d.position_bias == pytest.approx(2 / 5 - 0.5)  # valid verdicts 1,2,2,1,2
    assert d.reward_spread == pytest.approx(float(np.std(EXPECTED_LC)))
    # an always-"1" judge is never self-consistent and fully position biased
    bias = judge_diagnostics(SLOTS, [1] * 6, [0, 0, 0])
    assert bias.consistency_rate == 0.0 and bias.position_bias == 0.5
    total = d + bias
    assert total.judgments == 12 and total.groups == 2
    assert total.as_dict()["consistency_rate"] == pytest.approx(2 / 5)


def test_group_advantages():
    adv = group_advantages([1, 2, 3, 5, 5, 5], 3)
    assert adv[:3].tolist() == pytest.approx([-1 / (1 + 1e-4), 0, 1 / (1 + 1e-4)])
    assert adv[3:].tolist() == [0, 0, 0]
    assert group_advantages([1, 3], 2, scale=False).tolist() == [-1, 1]
    with pytest.raises(SERLInputError, match="groups of 4"):
        group_advantages([1, 2, 3], 4)


def test_group_advantages_match_trl():
    import torch
    from trl.trainer.utils import nanstd

    r = torch.tensor([0.1, 0.7, 0.3, 0.9, -1.0, 1.0, 0.0, 0.0])
    g = r.view(-1, 4)
    want = ((g - g.mean(1, keepdim=True)) / (nanstd(g, dim=1, keepdim=True) + 1e-4)).view(-1)
    assert group_advantages(r.numpy(), 4).tolist() == pytest.approx(want.tolist(), abs=1e-6)


def test_input_errors():
    with pytest.raises(SERLInputError, match="5 verdicts for 6"):
        verdict_matrix(3, SLOTS, VERDICTS[:5])
    with pytest.raises(SERLInputError, match="verdict 0 is 3"):
        verdict_matrix(3, SLOTS, [3, 1, 1, 1, 1, 1])
    with pytest.raises(SERLInputError, match="outside"):
        verdict_matrix(2, SLOTS, VERDICTS)
    with pytest.raises(SERLInputError, match="non-negative"):
        length_controlled_rewards([10, -1, 3], SLOTS, VERDICTS)
    with pytest.raises(SERLConfigError, match="band"):
        length_controlled_rewards(LENGTHS, SLOTS, VERDICTS, band=(1.2, 0.8))
    with pytest.raises(SERLInputError, match="mode"):
        actor_rewards(LENGTHS, SLOTS, VERDICTS, mode="elo")  # type: ignore[arg-type]
    assert isinstance(JudgmentSlot(0, 0, 1).winner(None), type(None))


@pytest.mark.parametrize(
    "epoch,expected",
    [(0.0, (0.0, 1.0)), (0.5, (0.25, 0.75)), (1.0, (0.5, 0.5)), (1.5, (0.5, 0.5)), (2.0, (0.5, 0.5))],
)
def test_schedule(epoch, expected):
    assert loss_weights(epoch, 2) == pytest.approx(expected)


def test_schedule_options():
    assert loss_weights(3, 4, alpha_cap=0.7, beta_floor=0.4) == pytest.approx((0.7, 0.4))
    assert loss_weights(0.2, 1, alpha_cap=0.7, beta_floor=0.4) == pytest.approx((0.2, 0.8))
    assert loss_weights(0.7, 1, schedule="constant", constant=(0.3, 0.9)) == (0.3, 0.9)
    with pytest.raises(SERLConfigError, match="num_epochs"):
        loss_weights(0, 0)
    with pytest.raises(SERLConfigError, match="schedule"):
        loss_weights(0, 1, schedule="cosine")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="epoch"):
        loss_weights(-1, 1)


def test_judge_config_checks():
    with pytest.raises(SERLConfigError, match="num_judgments"):
        JudgeConfig(num_judgments=3)
    with pytest.raises(SERLConfigError, match="response_2"):
        JudgeConfig(judge_template="{instruction} {response_1}")
    with pytest.raises(SERLConfigError, match="length_band"):
        JudgeConfig(length_band=(0.0, 1.0))
    with pytest.raises(SERLConfigError, match="actor_reward"):
        JudgeConfig(actor_reward="elo")  # type: ignore[arg-type]
    assert JudgeConfig(length_band=[0.5, 2]).length_band == (0.5, 2.0)  # type: ignore[arg-type]
