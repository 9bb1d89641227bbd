"""Parity with the authors' release (TURLEing/Rubrics-To-Tokens, commit 8e2dd823277d4f670690b344dfd1d3362ae3f339).

The paper's setting in the authors' configs (``examples/rubrics2tokens/*.yaml``) is
``rubric_norm_type: token_only_adv-rubrics_mean`` with ``rubric_token_level_reward_method: add``
and weight 0.5; the normalisation is ``reward_norm_rubrics`` in ``roll/utils/functionals.py``.
``ref_token_only`` restates what it computes (written from its behaviour, not copied): per group,
``x = w * s``, standardised over the valid tokens of each (rubric, response) row with the
population deviation and ``+1e-6``, masked, then averaged over the rubrics.
"""

import pytest
import torch

from zjulab.rtt import RTTConfig, combine_advantages, intra_sample_token_norm

AUTHORS_COMMIT = "8e2dd823277d4f670690b344dfd1d3362ae3f339"


def ref_token_only(weights, scores, mask, n_sample, literal_reshape=False):
    out = []
    for start in range(0, weights.size(0), n_sample):
        w = weights[start : start + n_sample]
        s = scores[start : start + n_sample]
        m = mask[start : start + n_sample]
        x = w * s.unsqueeze(-1)  # [G, K, T]
        g, k, t = x.shape
        # the authors reshape [G, K, T] -> [K, G, T]; the rows stay whole token rows but are
        # relabelled unless K == 1 or G == 1; the intended layout is the transpose
        x = x.reshape(k, g, t) if literal_reshape else x.transpose(0, 1)
        mm = m.unsqueeze(0).expand(k, -1, -1)
        n = mm.sum(dim=2, keepdim=True).clamp(min=1)
        mu = (x * mm).sum(dim=2, keepdim=True) / n
        sd = (((x - mu) ** 2 * mm).sum(dim=2, keepdim=True) / n).sqrt()
        out.append(((x - mu) / (sd + 1e-6) * mm).mean(dim=0))
    return torch.cat(out)


def _random_batch(gen, groups, g, k, t):
    b = groups * g
    w = torch.rand(b, k, t, generator=gen, dtype=torch.float64)
    w = torch.where(torch.rand(b, k, t, generator=gen, dtype=torch.float64) < 0.3, torch.zeros_like(w), w)
    s = torch.where(torch.rand(b, k, generator=gen) < 0.5, -1.0, 1.0).double()
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    return w, s, mask


def test_intra_sample_matches_the_authors_on_random_batches():
    gen = torch.Generator().manual_seed(0)
    for trial in range(1000):
        groups = 1 + trial % 3
        g = 2 + trial % 5
        k = 1 + trial % 4
        t = 1 + trial % 17
        w, s, mask = _random_batch(gen, groups, g, k, t)
        ours = intra_sample_token_norm(w, s, mask)
        ref = ref_token_only(w, s, mask, g)
        torch.testing.assert_close(ours, ref, atol=1e-9, rtol=0)
        if k == 1:  # with one rubric the authors' literal reshape is the same thing
            torch.testing.assert_close(
                ours, ref_token_only(w, s, mask, g, literal_reshape=True), atol=1e-9, rtol=0
            )


def test_the_authors_literal_reshape_mixes_responses_with_several_rubrics():
    """A documented deviation: with K > 1 rubrics and G > 1 responses the authors' reshape
    averages rows of different responses; the library averages each response's own rubrics."""
    gen = torch.Generator().manual_seed(1)
    w, s, mask = _random_batch(gen, 1, 4, 3, 6)
    mask = torch.ones_like(mask)
    ours = intra_sample_token_norm(w, s, mask)
    literal = ref_token_only(w, s, mask, 4, literal_reshape=True)
    assert (ours - literal).abs().max() > 0.1


def test_defaults_are_the_authors_configuration():
    cfg = RTTConfig()
    assert (cfg.lam, cfg.combine, cfg.token_norm, cfg.eps) == (0.5, "add", "intra_sample", 1e-6)
    a_resp = torch.tensor([0.5, -0.5])
    a_tok = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    # the authors' "add": advantages + weight * token term
    assert torch.equal(combine_advantages(a_resp, a_tok, lam=0.5), a_resp[:, None] + 0.5 * a_tok)
    # and their "mix": (1 - weight) * advantages + weight * token term
    assert torch.equal(
        combine_advantages(a_resp, a_tok, lam=0.3, mode="mix"), 0.7 * a_resp[:, None] + 0.3 * a_tok
    )


@pytest.mark.parametrize("k", [1, 3])
def test_rubric_padding_is_excluded_from_the_mean(k):
    """The authors' batches have no rubric padding; here a padded rubric slot does not count."""
    gen = torch.Generator().manual_seed(2)
    w, s, mask = _random_batch(gen, 1, 3, k, 5)
    pad_w = torch.cat([w, torch.rand(3, 1, 5, generator=gen, dtype=torch.float64)], dim=1)
    pad_s = torch.cat([s, torch.ones(3, 1, dtype=torch.float64)], dim=1)
    rubric_mask = torch.cat([torch.ones(3, k), torch.zeros(3, 1)], dim=1).double()
    torch.testing.assert_close(
        intra_sample_token_norm(pad_w, pad_s, mask, rubric_mask),
        ref_token_only(w, s, mask, 3),
        atol=1e-9,
        rtol=0,
    )
