"""RTTGRPOTrainer with TRL options a user combines with it: environment masks and loss options."""

import os

import pytest
import torch
from datasets import Dataset

from zjulab.rtt import RTTConfig, RTTConfigError, RTTGRPOTrainer, Rubric, RubricReward, SpanRelevance

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

NO_COMMA = Rubric.check("punctuation:no_comma").to_json()


def _segment_rollout(tok, rollouts):
    """A rollout_func whose completions are (text, is_model) segments; env tokens get env_mask 0."""

    def rollout(prompts, trainer):
        prompt_ids = [tok(p if isinstance(p, str) else p[-1]["content"])["input_ids"] for p in prompts]
        comp, env = [], []
        for i in range(len(prompts)):
            ids, mask = [], []
            for text, is_model in rollouts[i % len(rollouts)]:
                piece = tok(text, add_special_tokens=False)["input_ids"]
                ids += piece
                mask += [int(is_model)] * len(piece)
            comp.append(ids)
            env.append(mask)
        return {"prompt_ids": prompt_ids, "completion_ids": comp, "logprobs": None, "env_mask": env}

    return rollout


def _trainer(tmp_path, tiny, make_args, rollout, cfg=None, **args):
    model, tok = tiny
    ds = Dataset.from_list([{"prompt": "Answer yes or no", "rubrics": [NO_COMMA]}])
    return RTTGRPOTrainer(
        model,
        RubricReward(aggregate="all"),
        SpanRelevance(),
        cfg or RTTConfig(lam=0.5),
        args=make_args(tmp_path, batch=2, generations=2, max_completion_length=24, **args),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=rollout,
    ), ds


@pytest.mark.parametrize(
    "segments",
    [
        [(" ok", False), ("yes yes no no, ok", True)],  # tool output at the start
        [("yes yes yes yes yes", True), (" ok", False), (" no no, ok", True)],  # in the middle
        [("yes yes no no, ok", True), (" tool says ok", False)],  # at the end
        [(" ok", False), ("yes yes", True), (" ok ok", False), (" no, no", True), (" ok", False)],
    ],
    ids=["start", "middle", "end", "several"],
)
def test_relevance_lands_on_the_original_positions(tmp_path, fresh_tiny, make_args, segments):
    _, tok = fresh_tiny
    rollout = _segment_rollout(tok, [segments, [("yes no", True)]])
    trainer, ds = _trainer(tmp_path, fresh_tiny, make_args, rollout)
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 2)
    credit = trainer.last_credit
    assert "tool_mask" in batch
    ids = batch["completion_ids"][0]
    env = batch["tool_mask"][0] * batch["completion_mask"][0]
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    comma = [t for t, tk in enumerate(tokens) if "," in tk]
    assert len(comma) == 1 and env[comma[0]] == 1
    assert credit.scores[0].tolist() == [-1.0] and credit.scores[1].tolist() == [1.0]
    # all the relevance of the failed no-comma rubric sits on the comma, none on tool tokens
    w = credit.weights[0, 0]
    assert w[comma[0]] > 0
    assert w.sum() == pytest.approx(float(w[comma[0]]))
    assert (w[env == 0] == 0).all()
    # the comma is blamed and no other model token is
    a_tok = credit.token_advantages[0]
    model_tokens = (env == 1).nonzero(as_tuple=True)[0].tolist()
    assert a_tok[comma[0]] < 0
    assert all(a_tok[t] >= 0 for t in model_tokens if t != comma[0])
    assert (a_tok[env == 0] == 0).all()
    # and the text scored and spanned is the whole completion
    assert credit.texts[0] == tok.decode(ids[batch["completion_mask"][0].bool()], skip_special_tokens=True)


def _loss_batch(trainer, ds, **fields):
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 2)
    batch.update(fields)
    return batch


def test_off_policy_mask_is_a_sequence_decision(tmp_path, fresh_tiny, make_args, fixed_rollout):
    _, tok = fresh_tiny
    rollout = fixed_rollout(tok, ["no, yes", "yes no"])
    trainer, ds = _trainer(tmp_path, fresh_tiny, make_args, rollout, off_policy_mask_threshold=0.01)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 2)
    a_resp = batch["rtt_response_advantages"]
    adv = batch["advantages"]
    # response 1 (passes, A_resp > 0) has token advantages of one sign only here; make one token of the
    # positive response negative so a per-token rule would drop it
    adv = adv.clone()
    positive = int(a_resp.argmax())
    adv[positive, 0] = -1.0
    batch["advantages"] = adv
    # a sampler far from the policy: high KL on every sequence
    with torch.no_grad():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logp, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, att, batch["completion_ids"].shape[1]
        )
    batch["sampling_per_token_logps"] = logp + 5.0
    mask = batch["completion_mask"]
    trainer._rtt_sequence_advantages = batch["rtt_response_advantages"]
    keep = trainer.get_off_policy_mask(adv, logp, batch["sampling_per_token_logps"], mask, 0.01)
    trainer._rtt_sequence_advantages = None
    assert keep.shape == (2, 1)
    assert keep[positive, 0] == 1 and keep[1 - positive, 0] == 0
    # through the loss: equal to the loss with the dropped sequence's advantages zeroed, no mask
    loss = trainer._compute_loss(trainer.model, batch)
    trainer.off_policy_mask_threshold = None
    zeroed = dict(batch, advantages=adv * keep)
    ref = trainer._compute_loss(trainer.model, zeroed)
    assert float(loss) == pytest.approx(float(ref), abs=1e-6)
    # TRL's own rule on [B, T] advantages would have dropped the one negative token of the kept response
    trl_keep = (
        type(trainer).__mro__[1].get_off_policy_mask(adv, logp, batch["sampling_per_token_logps"], mask, 0.01)
    )
    assert trl_keep.shape == adv.shape and trl_keep[positive, 0] == 0


def test_vespo_weights_follow_the_response_advantage(tmp_path, fresh_tiny, make_args, fixed_rollout):
    _, tok = fresh_tiny
    trainer, _ = _trainer(tmp_path, fresh_tiny, make_args, fixed_rollout(tok, ["no, yes", "yes no"]))
    adv = torch.tensor([[0.5, -1.0, 0.5], [-0.5, 0.2, -0.5]])
    log_ratio = torch.full((2, 3), 0.1)
    mask = torch.ones(2, 3)
    trainer._rtt_sequence_advantages = torch.tensor([0.3, -0.3])
    phi = trainer.get_gamma_weights(
        advantages=adv, log_ratio_per_token=log_ratio, mask=mask, importance_sampling_ratio=None
    )
    trainer._rtt_sequence_advantages = None
    assert phi.shape == (2, 1)
    base = type(trainer).__mro__[1].get_gamma_weights
    pos = base(torch.tensor([[1.0]]), log_ratio[:1], mask[:1], None)
    neg = base(torch.tensor([[-1.0]]), log_ratio[:1], mask[:1], None)
    assert phi[0, 0] == pytest.approx(float(pos)) and phi[1, 0] == pytest.approx(float(neg))


@pytest.mark.parametrize(
    "extra",
    [
        dict(importance_sampling_level="sequence"),
        dict(loss_type="luspo", importance_sampling_level="sequence"),
    ],
)
def test_sequence_level_ratio_is_refused(tmp_path, fresh_tiny, make_args, fixed_rollout, extra):
    _, tok = fresh_tiny
    with pytest.raises(RTTConfigError, match="importance_sampling_level='token'"):
        _trainer(tmp_path, fresh_tiny, make_args, fixed_rollout(tok, ["a"]), **extra)


def test_token_credit_scale_and_clip(tmp_path, fresh_tiny, make_args, fixed_rollout):
    from zjulab.rtt import token_advantages

    # one blamed token among T gets -sqrt(T - 1) under the paper's intra-sample normalisation
    for t in (10, 1000):
        w = torch.zeros(1, 1, t)
        w[0, 0, 3] = 1.0
        a = token_advantages(w, torch.tensor([[-1.0]]), torch.ones(1, t))
        assert float(a[0, 3]) == pytest.approx(-((t - 1) ** 0.5), rel=1e-4)
    with pytest.raises(RTTConfigError, match="token_adv_clip"):
        RTTConfig(token_adv_clip=0)
    _, tok = fresh_tiny
    rollout = fixed_rollout(tok, ["no, yes", "yes no"])
    unclipped, ds = _trainer(tmp_path / "a", fresh_tiny, make_args, rollout, RTTConfig(lam=0.5))
    unclipped._generate_and_score_completions([dict(ds[0])] * 2)
    clipped, _ = _trainer(
        tmp_path / "b", fresh_tiny, make_args, rollout, RTTConfig(lam=0.5, token_adv_clip=0.5)
    )
    batch = clipped._generate_and_score_completions([dict(ds[0])] * 2)
    raw, cut = unclipped.last_credit.token_advantages, clipped.last_credit.token_advantages
    assert raw[0, 1] < -0.5  # the comma, unclipped
    assert torch.equal(cut, raw.clamp(-0.5, 0.5))
    expected = batch["rtt_response_advantages"][:, None] + 0.5 * cut
    assert torch.allclose(batch["advantages"], expected.to(batch["advantages"].dtype))


def test_token_credit_is_scored_on_the_text_it_spans(tmp_path, fresh_tiny, make_args, fixed_rollout):
    """When the reward saw other text than the decoded tokens (TRL's parsed tool messages), the
    checked rubrics are scored again on the decoded text, so sign and spans agree."""
    _, tok = fresh_tiny

    class ParsedText(RubricReward):  # stands for TRL's parsed completion: the comma is not in it
        def __call__(self, prompts, completions, **kwargs):
            return super().__call__(prompts, [c.replace(",", "") for c in completions], **kwargs)

    model, _ = fresh_tiny
    ds = Dataset.from_list([{"prompt": "Answer yes or no", "rubrics": [NO_COMMA]}])
    trainer = RTTGRPOTrainer(
        model,
        ParsedText(aggregate="all"),
        SpanRelevance(),
        RTTConfig(lam=0.5),
        args=make_args(tmp_path, batch=2, generations=2),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=fixed_rollout(tok, ["no, yes", "yes no"]),
    )
    trainer._generate_and_score_completions([dict(ds[0])] * 2)
    credit = trainer.last_credit
    assert trainer.rubric_reward.last.scores[0].tolist() == [1.0]  # what the reward saw
    assert credit.scores[0].tolist() == [-1.0]  # what the tokens say: the comma is there
    assert credit.token_advantages[0, 1] < 0  # and the comma is the blamed token


def test_parsed_completions_keep_the_rewards_verdict_and_place_its_spans(
    tmp_path, fresh_tiny, make_args, fixed_rollout
):
    """TRL's parsed tool-call completions: the reward sees the assistant contents only (no
    reasoning block, no tool result). Its verdict stands, and the checker's spans found on that
    text land on the same characters of the decoded completion; the reasoning's commas are not
    blamed for a rubric the answer meets."""
    model, tok = fresh_tiny

    class Parsed(RubricReward):  # stands for TRL's parse_response + tool loop
        def __call__(self, prompts, completions, **kwargs):
            parsed = []
            for c in completions:
                reasoning, answer = c.split(" answer:")
                parsed.append(
                    [
                        {"role": "assistant", "content": "", "reasoning_content": reasoning},
                        {"role": "tool", "content": "tool, output"},  # the tool wrote this comma
                        {"role": "assistant", "content": " answer:" + answer},
                    ]
                )
            return super().__call__(prompts, parsed, **kwargs)

    ds = Dataset.from_list([{"prompt": "Answer yes or no", "rubrics": [NO_COMMA]}])
    trainer = RTTGRPOTrainer(
        model,
        Parsed(aggregate="all"),
        SpanRelevance(),
        RTTConfig(lam=0.5),
        args=make_args(tmp_path, batch=2, generations=2, max_completion_length=24),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=fixed_rollout(tok, ["so, yes. answer: yes no", "fine. answer: yes, no"]),
    )
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 2)
    credit = trainer.last_credit
    # the reward's verdicts: the first answer has no comma (its reasoning has one), the second has
    assert trainer.rubric_reward.last.scores.flatten().tolist() == [1.0, -1.0]
    assert credit.scores.flatten().tolist() == [1.0, -1.0]
    assert batch["rtt_response_advantages"][0] > 0 > batch["rtt_response_advantages"][1]
    # response 0 meets the rubric: no token is blamed, the reasoning's comma included
    assert (credit.weights[0] == 0).all() and (credit.token_advantages[0] >= 0).all()
    # response 1: exactly the answer's comma is blamed
    tokens = tok.convert_ids_to_tokens(credit.completion_ids[1])
    comma = [j for j, tk in enumerate(tokens) if "," in tk]
    assert len(comma) == 1 and "".join(tokens[: comma[0]]).endswith("yes")
    assert credit.weights[1, 0].nonzero().flatten().tolist() == comma
    assert credit.token_advantages[1, comma[0]] < 0
    assert all(credit.token_advantages[1, j] >= 0 for j in range(len(tokens)) if j != comma[0])


def test_tool_messages_are_not_part_of_the_scored_response():
    from zjulab.rtt.reward import completion_pieces, completion_text

    completion = [
        {"role": "assistant", "content": "Let me look it up"},
        {"role": "tool", "content": "Paris, France"},
        {"role": "assistant", "content": " it is Paris"},
    ]
    assert completion_pieces(completion) == ["Let me look it up", " it is Paris"]
    assert completion_text(completion) == "Let me look it up it is Paris"
    reward = RubricReward()
    assert reward(prompts=["q"], completions=[completion], rubrics=[[NO_COMMA]]) == [1.0]


def test_a_masked_truncated_response_keeps_the_rewards_scores(tmp_path, fresh_tiny, make_args, fixed_rollout):
    """With mask_truncated_completions TRL zeroes a cut-off completion's mask; its rubric scores
    (and the logged rubric accuracy) stay the reward's, not a check of an empty text."""
    _, tok = fresh_tiny
    trainer, ds = _trainer(
        tmp_path,
        fresh_tiny,
        make_args,
        fixed_rollout(tok, ["no, yes", "yes no"]),
        mask_truncated_completions=True,
    )
    trainer.model.train()
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 2)
    assert batch["completion_mask"].sum() == 0  # no EOS: both are cut off and masked
    assert trainer.last_credit.scores.flatten().tolist() == [-1.0, 1.0]  # not [1, 1] from ""
    assert trainer._metrics["train"]["rtt/rubric_accuracy"][-1] == 0.5


@pytest.mark.parametrize(
    ("scale_rewards", "a_resp"),
    # TRL divides by the group's unbiased std plus 1e-4
    [("none", [-0.5, 0.5, 0.5, -0.5]), ("group", [x * 0.5 / (3**-0.5 + 1e-4) for x in (-1, 1, 1, -1)])],
)
def test_scale_rewards_scales_the_response_term_only(
    tmp_path, fresh_tiny, make_args, fixed_rollout, scale_rewards, a_resp
):
    """TRL's scale_rewards divides A_resp by the group's std; A_tok keeps its own normalisation."""
    model, tok = fresh_tiny
    # no-comma rubric, all-or-nothing reward: 0, 1, 1, 0 (mean 0.5, unbiased std 0.57735)
    rollout = fixed_rollout(tok, ["no, yes, ok", "yes no", "no no no", "a, b"])
    ds = Dataset.from_list([{"prompt": "Answer yes or no", "rubrics": [NO_COMMA]}])
    trainer = RTTGRPOTrainer(
        model,
        RubricReward(aggregate="all"),
        SpanRelevance(),
        RTTConfig(lam=0.5),
        args=make_args(
            tmp_path, batch=4, generations=4, max_completion_length=24, scale_rewards=scale_rewards
        ),
        train_dataset=ds,
        processing_class=tok,
        rollout_func=rollout,
    )
    trainer.model.train()
    batch = trainer._generate_and_score_completions([dict(ds[0])] * 4)
    credit = trainer.last_credit
    torch.testing.assert_close(credit.response_advantages, torch.tensor(a_resp), atol=1e-5, rtol=0)
    # intra-sample A_tok of the failing "no, yes, ok": the comma token blamed, the same under either setting
    a_tok = credit.token_advantages
    assert a_tok[0].min() < -1.0 and a_tok[1].abs().max() == 0
    mask = batch["completion_mask"].bool()
    expected = torch.tensor(a_resp).unsqueeze(1) + 0.5 * a_tok
    torch.testing.assert_close(batch["advantages"][mask], expected[mask], atol=1e-5, rtol=0)


def test_every_token_wise_loss_type_reads_each_tokens_advantage(
    tmp_path, fresh_tiny, make_args, fixed_rollout
):
    """Each loss type clips / weighs every token by the sign and size of its own advantage A[i, t]."""
    _, tok = fresh_tiny
    rollout = fixed_rollout(tok, ["no, yes, ok", "yes no"])
    trainer, ds = _trainer(tmp_path, fresh_tiny, make_args, rollout, cfg=RTTConfig(lam=2.0))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = _loss_batch(trainer, ds)
    adv, mask = batch["advantages"], batch["completion_mask"].float()
    # the failing response has tokens of both signs, so a per-sequence reading would show
    assert adv.dim() == 2 and (adv[0][mask[0].bool()] > 0).any() and (adv[0][mask[0].bool()] < 0).any()
    with torch.no_grad():
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logp, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, att, batch["completion_ids"].shape[1]
        )
    noise = torch.tensor([0.5, -0.5]).repeat(logp.numel() // 2 + 1)[: logp.numel()].view_as(logp)
    batch["old_per_token_logps"] = logp + noise  # ratios e^-0.5 and e^0.5: clipped on some tokens
    r = torch.exp(-noise)
    eps_lo, eps_hi = trainer.epsilon_low, trainer.epsilon_high
    clipped = -torch.min(r * adv, r.clamp(1 - eps_lo, 1 + eps_hi) * adv) * mask
    tau = torch.where(adv > 0, trainer.args.sapo_temperature_pos, trainer.args.sapo_temperature_neg)
    soft = -(torch.sigmoid(tau * (r - 1)) * 4 / tau) * adv * mask
    expected = {
        "grpo": (clipped.sum(1) / mask.sum(1)).mean(),
        "bnpo": clipped.sum() / mask.sum(),
        "dr_grpo": clipped.sum() / (adv.size(0) * trainer.max_completion_length),
        "dapo": clipped.sum() / batch["num_items_in_batch"],
        "sapo": (soft.sum(1) / mask.sum(1)).mean(),
        "cispo": (-(r.clamp(max=eps_hi) * adv * logp) * mask).sum() / batch["num_items_in_batch"],
    }
    for loss_type, value in expected.items():
        trainer.loss_type = loss_type
        loss = trainer._compute_loss(trainer.model, batch)
        assert float(loss) == pytest.approx(float(value), abs=1e-5), loss_type
    # the same rule fed each response's mean advantage gives another loss (so the check can fail)
    trainer.loss_type = "grpo"
    mean = ((adv * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)).expand_as(adv)
    per_seq = -torch.min(r * mean, r.clamp(1 - eps_lo, 1 + eps_hi) * mean) * mask
    assert abs(float((per_seq.sum(1) / mask.sum(1)).mean()) - float(expected["grpo"])) > 1e-3
