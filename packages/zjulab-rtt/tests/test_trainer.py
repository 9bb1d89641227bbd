"""RTTGRPOTrainer against plain TRL GRPO, and one step checked by hand."""

import math
import os

import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

from zjulab.rtt import RTTConfig, RTTGRPOTrainer, Rubric, RubricReward, SpanRelevance, UniformRelevance

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

NO_COMMA = Rubric.check("punctuation:no_comma").to_json()
SAY_YES = Rubric.check("keywords:existence", keywords=["yes"]).to_json()
COMPLETIONS = [
    "no, yes",
    "yes no",
    "the car, the dog",
    "red blue",
    "yes, yes",
    "no no",
    "the red car",
    "red, blue",
]


def _dataset():
    return Dataset.from_list(
        [
            {"prompt": "Answer yes or no", "rubrics": [NO_COMMA, SAY_YES]},
            {"prompt": "Name a colour", "rubrics": [NO_COMMA]},
        ]
    )


def _pair(tmp_path, tiny, clone, make_args, fixed_rollout, relevance, rtt_cfg, aggregate="rate"):
    model, tok = tiny
    ds = _dataset()
    rollout = fixed_rollout(tok, COMPLETIONS)
    plain = GRPOTrainer(
        model=clone(model),
        reward_funcs=[RubricReward(aggregate=aggregate)],
        args=make_args(tmp_path / "a", batch=8, generations=4),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=rollout,
    )
    rtt = RTTGRPOTrainer(
        clone(model),
        RubricReward(aggregate=aggregate),
        relevance,
        rtt_cfg,
        args=make_args(tmp_path / "b", batch=8, generations=4),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=rollout,
    )
    inputs = [dict(ds[0])] * 4 + [dict(ds[1])] * 4
    return plain, rtt, inputs


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    ("relevance", "cfg"),
    [
        (SpanRelevance(), RTTConfig(lam=0.0)),
        (UniformRelevance(0.3), RTTConfig(lam=0.5)),
        (SpanRelevance(), RTTConfig(lam=0.0, combine="add", token_norm="softmax_rubrics")),
    ],
    ids=["lambda0-span", "uniform-intra", "lambda0-softmax"],
)
def test_matches_plain_grpo(tmp_path, fresh_tiny, clone, make_args, fixed_rollout, relevance, cfg):
    plain, rtt, inputs = _pair(tmp_path, fresh_tiny, clone, make_args, fixed_rollout, relevance, cfg)
    out_p = plain._generate_and_score_completions(inputs)
    out_r = rtt._generate_and_score_completions(inputs)
    assert torch.equal(out_p["completion_ids"], out_r["completion_ids"])
    assert out_p["advantages"].abs().max() > 0.1  # the batch carries a real signal
    assert out_r["advantages"].shape == out_p["completion_ids"].shape
    expected = out_p["advantages"][:, None].expand_as(out_r["advantages"])
    assert (out_r["advantages"] - expected).abs().max().item() <= 1e-6
    lp, gp = _loss_and_grads(plain, out_p)
    lr, gr = _loss_and_grads(rtt, out_r)
    assert abs(lp.item() - lr.item()) <= 1e-6
    assert len(gp) == len(gr) > 0
    assert max((a - b).abs().max().item() for a, b in zip(gp, gr)) <= 1e-6


def test_token_credit_changes_gradients(tmp_path, fresh_tiny, clone, make_args, fixed_rollout):
    plain, rtt, inputs = _pair(
        tmp_path, fresh_tiny, clone, make_args, fixed_rollout, SpanRelevance(), RTTConfig(lam=0.5)
    )
    out_p = plain._generate_and_score_completions(inputs)
    out_r = rtt._generate_and_score_completions(inputs)
    _, gp = _loss_and_grads(plain, out_p)
    _, gr = _loss_and_grads(rtt, out_r)
    assert max((a - b).abs().max().item() for a, b in zip(gp, gr)) > 1e-4
    # the comma of "no, yes" (response 0, token 1) is blamed for the violated no-comma rubric
    credit = rtt.last_credit
    assert credit.texts[0] == "no, yes"
    assert credit.scores[0].tolist() == [-1.0, 1.0]
    assert credit.token_advantages[0, 1] < 0


def test_one_step_by_hand(tmp_path, fresh_tiny, clone, make_args, fixed_rollout):
    model, tok = fresh_tiny
    ds = Dataset.from_list([{"prompt": "Answer yes or no", "rubrics": [NO_COMMA]}])
    trainer = RTTGRPOTrainer(
        clone(model),
        RubricReward(aggregate="all"),
        SpanRelevance(),
        RTTConfig(lam=0.5),
        args=make_args(tmp_path, batch=2, generations=2),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=fixed_rollout(tok, ["no, yes", "yes no"]),
    )
    assert tok.convert_ids_to_tokens(tok("no, yes", add_special_tokens=False)["input_ids"]) == [
        "no",
        ",",
        "Ġyes",
    ]
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 2)
    # rewards [0, 1] -> GRPO advantages -+0.5 / (std + 1e-4) with the unbiased std sqrt(.5)
    a_resp = 0.5 / (math.sqrt(0.5) + 1e-4)
    # response 0: relevance [0, 1, 0] of the comma, s = -1 -> x = [0, -1, 0]: mu = -1/3, sigma = sqrt(2/9)
    sig = math.sqrt(2 / 9) + 1e-6
    tok_adv = [(1 / 3) / sig, (-2 / 3) / sig, (1 / 3) / sig]
    expected = torch.tensor(
        [
            [-a_resp + 0.5 * v for v in tok_adv],
            [a_resp, a_resp, a_resp],
        ]  # response 1 meets it: no token credit
    )
    assert batch["advantages"] == pytest.approx(expected, abs=1e-5)
    mask = batch["completion_mask"].float()
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    # ratio = 1 on the first step, so the DAPO loss is -sum(A * mask) / number of tokens
    hand_loss = -(expected * mask).sum() / mask.sum()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(hand_loss.item(), abs=1e-6)
    # its gradient is that of the surrogate -sum(A * logp * mask) / tokens (logp from TRL's own
    # per-token log-probability routine, so only the advantage weighting is under test)
    loss.backward()
    got = [p.grad.clone() for p in trainer.model.parameters()]
    trainer.model.zero_grad()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logp, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, att, batch["completion_ids"].shape[1]
    )
    (-(expected * logp * mask).sum() / mask.sum()).backward()
    ref = [p.grad.clone() for p in trainer.model.parameters()]
    assert max(g.abs().max().item() for g in ref) > 1e-3
    assert max((a - b).abs().max().item() for a, b in zip(got, ref)) < 1e-6
    # and one optimiser step through Trainer.train() moves the weights
    trainer.train()
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_gathered_group_path_matches_local(tmp_path, fresh_tiny, clone, make_args, fixed_rollout):
    # the multi-process path (pad, gather, normalise, slice back) on one process must equal the local one
    from zjulab.rtt import token_advantages

    _, rtt, _ = _pair(
        tmp_path,
        fresh_tiny,
        clone,
        make_args,
        fixed_rollout,
        SpanRelevance(),
        RTTConfig(token_norm="group_token"),
    )
    torch.manual_seed(0)
    w, s = torch.rand(8, 2, 5), torch.sign(torch.randn(8, 2))
    tm = torch.ones(8, 5)
    tm[1, 3:] = 0
    rm = torch.ones(8, 2)
    rm[4:, 1] = 0
    got = rtt._gathered_token_advantages(w, s, tm, rm, 4)
    assert got == pytest.approx(token_advantages(w, s, tm, rm, method="group_token", group_size=4), abs=1e-6)


@pytest.mark.parametrize(
    "norm", ["intra_sample", "group_token", "rubric_mean_group_token", "softmax_rubrics"]
)
def test_uniform_relevance_equivalence_by_normalisation(
    tmp_path, fresh_tiny, clone, make_args, fixed_rollout, norm
):
    """Uniform relevance is plain GRPO under intra_sample only; the others add a per-response term."""
    plain, rtt, inputs = _pair(
        tmp_path,
        fresh_tiny,
        clone,
        make_args,
        fixed_rollout,
        UniformRelevance(0.7),
        RTTConfig(lam=0.5, token_norm=norm),
    )
    out_p = plain._generate_and_score_completions(inputs)
    out_r = rtt._generate_and_score_completions(inputs)
    mask = out_r["completion_mask"] > 0
    a_tok = rtt.last_credit.token_advantages
    # never any token-level variation within a response: uniform relevance cannot point at a token
    for i in range(a_tok.size(0)):
        vals = a_tok[i][mask[i]]
        assert (vals - vals[0]).abs().max() <= 1e-6
    expected = out_p["advantages"][:, None].expand_as(out_r["advantages"])
    gap = ((out_r["advantages"] - expected).abs() * mask).max().item()
    if norm == "intra_sample":
        assert a_tok.abs().max() == 0 and gap == 0.0
        lp, gp = _loss_and_grads(plain, out_p)
        lr, gr = _loss_and_grads(rtt, out_r)
        assert lp.item() == lr.item()
        assert all(torch.equal(a, b) for a, b in zip(gp, gr))
    else:
        assert gap > 0.1  # a response-level term that follows the rubric scores
        # ... and it sides with the scores: a response meeting more rubrics gets more
        met = (rtt.last_credit.scores > 0).float().sum(1)
        per_resp = a_tok[:, 0]
        for g in range(0, 8, 4):
            hi, lo = int(met[g : g + 4].argmax()) + g, int(met[g : g + 4].argmin()) + g
            if met[hi] > met[lo]:
                assert per_resp[hi] > per_resp[lo]
