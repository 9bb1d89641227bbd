"""The four token normalisations on a hand-worked [G=2, K=2, T=3] example with masks."""

import math

import pytest
import torch

from zjulab.rtt import (
    RTTConfigError,
    ShapeError,
    combine_advantages,
    group_token_norm,
    intra_sample_token_norm,
    rubric_mean_group_token_norm,
    softmax_rubrics_norm,
    token_advantages,
)

# Two responses (one group, G=2), two rubrics (K=2), three token slots (T=3).
# Response 1 has only two real tokens (its third slot is padding).
W = torch.tensor(
    [
        [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]],
        [[1.0, 1.0, 0.0], [0.5, 0.0, 0.0]],
    ]
)
S = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
TM = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
EPS = 1e-6


def test_intra_sample_hand_worked():
    # response 0, rubric 0: x = [1, 0, .5], mu = .5, sigma = sqrt(1/6)  -> z = [+c, -c, 0], c = .5/sqrt(1/6)
    # response 0, rubric 1: x = [0, -1, -.5], mu = -.5, same sigma          -> z = [+c, -c, 0]
    # response 1, rubric 0: x = [-1, -1 | pad], sigma = 0                   -> z = [0, 0]
    # response 1, rubric 1: x = [.5, 0 | pad], mu = .25, sigma = .25        -> z = [+1, -1] (up to eps)
    c = 0.5 / (math.sqrt(1 / 6) + EPS)
    one = 0.25 / (0.25 + EPS)
    expected = torch.tensor([[c, -c, 0.0], [one / 2, -one / 2, 0.0]])
    got = intra_sample_token_norm(W, S, TM, eps=EPS)
    assert got == pytest.approx(expected, abs=1e-6)
    assert got[0, 0].item() == pytest.approx(1.2247449, abs=1e-5)


def test_group_token_hand_worked():
    # rubric 0 over the 5 valid group tokens: x = [1, 0, .5, -1, -1]: mu = -.1, var = 3.2/5 = .64, sigma = .8
    # rubric 1: x = [0, -1, -.5, .5, 0]: mu = -.2, var = 1.3/5 = .26
    s1 = math.sqrt(0.26)
    z0 = [[(1 + 0.1) / 0.8, (0 + 0.1) / 0.8, (0.5 + 0.1) / 0.8], [(-1 + 0.1) / 0.8, (-1 + 0.1) / 0.8, 0.0]]
    z1 = [[(0 + 0.2) / s1, (-1 + 0.2) / s1, (-0.5 + 0.2) / s1], [(0.5 + 0.2) / s1, (0 + 0.2) / s1, 0.0]]
    expected = torch.tensor([[(a + b) / 2 for a, b in zip(r0, r1)] for r0, r1 in zip(z0, z1)])
    expected[1, 2] = 0.0
    got = group_token_norm(W, S, TM, group_size=2, eps=EPS)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[0].tolist() == pytest.approx([0.883616, -0.721964, 0.080826], abs=1e-5)


def test_rubric_mean_then_group_token_hand_worked():
    # mean over rubrics: response 0 -> [.5, -.5, 0]; response 1 -> [-.25, -.5 | pad]
    # group stats over 5 tokens: mu = -.15, squared deviations .4225 .1225 .0225 .01 .1225 -> var = .7/5 = .14
    sd = math.sqrt(0.14)
    expected = torch.tensor(
        [
            [(0.5 + 0.15) / sd, (-0.5 + 0.15) / sd, (0 + 0.15) / sd],
            [(-0.25 + 0.15) / sd, (-0.5 + 0.15) / sd, 0.0],
        ]
    )
    got = rubric_mean_group_token_norm(W, S, TM, group_size=2, eps=EPS)
    assert got == pytest.approx(expected, abs=1e-5)


def test_softmax_over_rubrics_hand_worked():
    # rubric advantages over the group: scores [+1, -1] -> mean 0, unbiased std sqrt(2) -> +-1/sqrt(2)
    a = 1 / math.sqrt(2)
    p = 1 / (1 + math.exp(-1.0))  # softmax of (1, 0) -> (p, 1 - p)
    q = 1 / (1 + math.exp(-0.5))  # softmax of (1, .5)
    expected = torch.tensor(
        [
            [a * p - a * (1 - p), a * (1 - p) - a * p, 0.0],  # t2: weights equal -> 0
            [-a * q + a * (1 - q), -a * p + a * (1 - p), 0.0],
        ]
    )
    got = softmax_rubrics_norm(W, S, TM, group_size=2, eps=EPS)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[0, 0].item() == pytest.approx(0.326770, abs=1e-5)


def test_padded_rubric_is_ignored():
    # A third, padded rubric must change nothing.
    w3 = torch.cat([W, torch.rand(2, 1, 3)], dim=1)
    s3 = torch.cat([S, torch.tensor([[1.0], [1.0]])], dim=1)
    rm = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    for method in ("intra_sample", "group_token", "rubric_mean_group_token", "softmax_rubrics"):
        base = token_advantages(W, S, TM, method=method, group_size=2)
        padded = token_advantages(w3, s3, TM, rm, method=method, group_size=2)
        assert padded == pytest.approx(base, abs=1e-6), method


def test_group_axis_is_not_mixed_with_rubric_axis():
    # Two groups of G=2 with K=3: the group statistics must use the responses of the same group
    # only. Put the same first group twice but change the second group: group 1 must not move.
    torch.manual_seed(0)
    w = torch.rand(4, 3, 5)
    s = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    tm = torch.ones(4, 5)
    w2 = w.clone()
    w2[2:] = torch.rand(2, 3, 5)
    for method in ("group_token", "rubric_mean_group_token", "softmax_rubrics"):
        a = token_advantages(w, s, tm, method=method, group_size=2)
        b = token_advantages(w2, s, tm, method=method, group_size=2)
        assert a[:2] == pytest.approx(b[:2], abs=1e-6), method
        assert not torch.allclose(a[2:], b[2:]), method
    # group_token per rubric equals normalising the [G*T] slice of that rubric by hand
    a = group_token_norm(w, s, tm, group_size=2, eps=0.0)
    x = w * s.unsqueeze(-1)
    zs = []
    for k in range(3):
        sl = x[:2, k, :]
        zs.append((sl - sl.mean()) / sl.std(unbiased=False))
    assert a[:2] == pytest.approx(torch.stack(zs).mean(0), abs=1e-5)


def test_uniform_relevance_gives_zero_intra_sample_credit():
    w = torch.full((2, 2, 3), 0.7)
    assert intra_sample_token_norm(w, S, TM) == pytest.approx(torch.zeros(2, 3), abs=1e-6)


def test_combine_add_and_mix():
    a_resp = torch.tensor([1.0, -2.0])
    a_tok = torch.tensor([[0.5, -0.5, 0.0], [1.0, 0.0, 0.0]])
    assert combine_advantages(a_resp, a_tok, lam=0.5).tolist() == [[1.25, 0.75, 1.0], [-1.5, -2.0, -2.0]]
    assert combine_advantages(a_resp, a_tok, lam=0.5, mode="mix").tolist() == [
        [0.75, 0.25, 0.5],
        [-0.5, -1.0, -1.0],
    ]
    assert torch.equal(combine_advantages(a_resp, a_tok, lam=0.0), a_resp[:, None].expand(2, 3))


def test_shape_and_option_errors():
    with pytest.raises(ShapeError, match="scores must be"):
        intra_sample_token_norm(W, S[:, :1], TM)
    with pytest.raises(ShapeError, match="token_mask"):
        intra_sample_token_norm(W, S, TM[:, :2])
    with pytest.raises(ShapeError, match="whole number of groups"):
        group_token_norm(W, S, TM, group_size=3)
    with pytest.raises(ShapeError, match="needs group_size"):
        token_advantages(W, S, TM, method="group_token")
    with pytest.raises(RTTConfigError, match="unknown token normalisation"):
        token_advantages(W, S, TM, method="nope", group_size=2)  # type: ignore[arg-type]
    with pytest.raises(RTTConfigError, match="mode"):
        combine_advantages(torch.zeros(2), torch.zeros(2, 3), mode="mul")
