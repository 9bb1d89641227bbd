import itertools
import math

import pytest
import torch

from zjulab.crs.crf import LinearChainCRF, bio_constraints
from zjulab.crs.errors import CrsConfigError, MetricInputError


def hand_crf() -> LinearChainCRF:
    crf = LinearChainCRF(2)
    with torch.no_grad():
        crf.start_transitions.zero_()
        crf.end_transitions.zero_()
        crf.transitions.copy_(torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))  # switching costs 1
    return crf


# greedy per position picks 0, 1, 0; switching twice costs 2, so Viterbi stays on 0
EMISSIONS = torch.tensor([[[1.0, 0.0], [0.5, 0.6], [1.0, 0.0]]])


def brute_force(crf: LinearChainCRF, em: torch.Tensor, length: int) -> tuple[float, list[int], float]:
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        tags = torch.tensor([list(path) + [0] * (em.size(1) - length)])
        mask = torch.tensor([[True] * length + [False] * (em.size(1) - length)])
        scores[path] = float(crf.path_score(em, tags, mask).detach()[0])
    best = max(scores, key=scores.get)
    log_z = math.log(sum(math.exp(s) for s in scores.values()))
    return log_z, list(best), scores[best]


def test_viterbi_on_hand_built_lattice():
    crf = hand_crf()
    assert crf.decode(EMISSIONS) == [[0, 0, 0]]
    assert EMISSIONS.argmax(-1).tolist() == [[0, 1, 0]]
    # path 0,0,0 scores 1 + 0.5 + 1 = 2.5; path 0,1,0 scores 1 + 0.6 + 1 - 2 = 0.6
    assert float(crf.path_score(EMISSIONS, torch.tensor([[0, 0, 0]])).detach()[0]) == pytest.approx(2.5)
    assert float(crf.path_score(EMISSIONS, torch.tensor([[0, 1, 0]])).detach()[0]) == pytest.approx(0.6)


def test_forward_algorithm_matches_enumeration():
    crf = hand_crf()
    log_z, best, _ = brute_force(crf, EMISSIONS, 3)
    assert float(crf.log_partition(EMISSIONS).detach()[0]) == pytest.approx(log_z, abs=1e-5)
    assert best == [0, 0, 0]
    nll = crf(EMISSIONS, torch.tensor([[0, 0, 0]])).detach()
    assert float(nll) == pytest.approx(log_z - 2.5, abs=1e-5)


def test_random_crf_with_mask_matches_enumeration():
    torch.manual_seed(0)
    crf = LinearChainCRF(3)
    em = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    z = crf.log_partition(em, mask)
    paths = crf.decode(em, mask)
    for b, length in enumerate([4, 2]):
        log_z, best, _ = brute_force(crf, em[b : b + 1], length)
        assert float(z[b].detach()) == pytest.approx(log_z, abs=1e-4)
        assert paths[b] == best


def test_bio_constraints_forbid_o_to_inside():
    tags = ["O", "B-color", "I-color", "B-size", "I-size"]
    start, trans = bio_constraints(tags)
    assert start.tolist() == [True, True, False, True, False]
    assert not trans[0, 2] and trans[1, 2] and trans[2, 2] and not trans[3, 2]
    crf = LinearChainCRF(len(tags), start_allowed=start, transition_allowed=trans)
    em = torch.zeros(1, 2, 5)
    em[0, :, 2] = 5.0  # emissions love I-color everywhere
    assert crf.decode(em)[0][0] != 2  # but a sequence cannot start inside a span


def test_crf_learns_by_gradient():
    torch.manual_seed(0)
    crf = LinearChainCRF(2)
    em = torch.zeros(1, 3, 2)
    gold = torch.tensor([[1, 0, 1]])
    opt = torch.optim.SGD(crf.parameters(), lr=0.5)
    first = float(crf(em, gold).detach())
    for _ in range(50):
        opt.zero_grad()
        crf(em, gold).backward()
        opt.step()
    assert float(crf(em, gold).detach()) < first / 4
    assert crf.decode(em) == [[1, 0, 1]]


def test_crf_errors():
    crf = LinearChainCRF(2)
    with pytest.raises(MetricInputError, match=r"\[batch, length, 2\]"):
        crf.decode(torch.zeros(1, 3, 4))
    with pytest.raises(MetricInputError, match="mask\\[:, 0\\]"):
        crf.decode(torch.zeros(1, 3, 2), torch.tensor([[False, True, True]]))
    with pytest.raises(CrsConfigError, match="num_tags"):
        LinearChainCRF(0)
    with pytest.raises(CrsConfigError, match="constraint shapes"):
        LinearChainCRF(2, start_allowed=torch.ones(3, dtype=torch.bool))
