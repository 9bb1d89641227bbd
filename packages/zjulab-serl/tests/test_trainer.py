import math

import numpy as np
import pytest
import torch

from zjulab.common.testing import tiny_causal_lm
from zjulab.serl import SERLConfig, SERLConfigError, SERLInputError, SERLTrainer, group_advantages

datasets = pytest.importorskip("datasets")

PROMPTS = [
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "user", "content": "Recommend a phone with a large battery."}],
]


def alternating_parser(text):
    """A stand-in judge format for a random tiny model: the verdict follows the output's length."""
    return 1 + len(text) % 2


def make_trainer(tmp_path, peft_config=None, **overrides):
    model, tok = tiny_causal_lm(0)
    tok.padding_side = "left"
    settings = dict(
        output_dir=str(tmp_path / "out"),
        num_generations=3,
        num_judge_generations=2,
        per_device_train_batch_size=6,
        max_completion_length=8,
        max_judge_completion_length=4,
        max_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        actor_reward="copeland",
        seed=0,
        # the random tiny model never ends a rollout: read the stand-in verdicts of cut-off rollouts
        read_truncated_verdicts=True,
    )
    settings.update(overrides)
    args = SERLConfig(**settings)
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS})
    trainer = SERLTrainer(
        model,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        verdict_parser=alternating_parser,
        peft_config=peft_config,
    )
    if not hasattr(trainer, "current_gradient_accumulation_steps"):
        trainer.current_gradient_accumulation_steps = 1
    return trainer


def test_one_step_updates_weights_and_logs(tmp_path):
    trainer = make_trainer(tmp_path, loss_schedule="constant")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(changed) == len(before)
    # two prompt groups, each C(3,2) * K = 6 judge rollouts
    assert [len(g.slots) for g in trainer.last_judgments] == [6, 6]
    logs = trainer.state.log_history[0]
    for key in ("serl/consistency_rate", "serl/invalid_rate", "serl/position_bias", "serl/reward_spread"):
        assert key in logs and math.isfinite(logs[key])
    assert "serl/actor_loss" in logs and "serl/judge_loss" in logs
    assert "judge/completions/max_length" in logs and logs["judge/completions/max_length"] <= 4
    assert logs["completions/max_length"] <= 8
    assert logs["serl/alpha"] == 1.0 and logs["serl/beta"] == 1.0


def test_generation_batch_joins_actor_and_judge_rows(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.model.train()
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(3)])
    role = batch["serl_role"]
    assert int((role == 0).sum()) == 6 and int((role == 1).sum()) == 12
    assert batch["completion_ids"].size(0) == batch["prompt_ids"].size(0) == batch["advantages"].size(0) == 18
    # actor advantages: GRPO normalisation of the Actor rewards over N = 3
    actor = np.concatenate([g.actor_rewards for g in trainer.last_judgments])
    np.testing.assert_allclose(
        batch["advantages"][:6].numpy(), group_advantages(actor, 3), rtol=1e-5, atol=1e-5
    )
    # judge advantages: over the K = 2 rollouts of each pair
    judge = np.concatenate([g.judge_rewards for g in trainer.last_judgments])
    np.testing.assert_allclose(
        batch["advantages"][6:].numpy(), group_advantages(judge, 2), rtol=1e-5, atol=1e-5
    )
    # judge rewards follow from the verdicts and Actor rewards
    for g in trainer.last_judgments:
        for s, v, r in zip(g.slots, g.verdicts, g.judge_rewards):
            win, lose = s.winner(v), s.loser(v)
            assert r == np.sign(g.actor_rewards[win] - g.actor_rewards[lose])
    # the judge prompt holds both responses; completions are at most the judge length
    assert batch["completion_mask"][6:].sum(1).max() <= 4
    assert int(batch["num_items_in_batch"]) == int(batch["serl_actor_items"]) + int(batch["serl_judge_items"])


def _hand_loss(model, p_ids, p_mask, c_ids, c_mask, adv, old, eps=0.2, loss_type="grpo"):
    """The clipped GRPO loss in plain torch: mean over sequences of the token-mean objective
    ("grpo"), or the token sum over the role's token count ("dapo")."""
    ids = torch.cat([p_ids, c_ids], 1)
    att = torch.cat([p_mask, c_mask], 1)
    t = c_ids.size(1)
    logits = model(input_ids=ids, attention_mask=att).logits[:, -t - 1 : -1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, c_ids.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - old)
    a = adv.unsqueeze(1)
    per_token = -torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a)
    if loss_type == "dapo":
        return (per_token * c_mask).sum() / c_mask.sum()
    return ((per_token * c_mask).sum(1) / c_mask.sum(1).clamp(min=1)).mean()


def _fixed_batch(model):
    g = torch.Generator().manual_seed(3)
    p_ids = torch.randint(10, 200, (4, 5), generator=g)
    c_ids = torch.randint(10, 200, (4, 3), generator=g)
    p_mask = torch.ones(4, 5, dtype=torch.long)
    c_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    with torch.no_grad():
        ids = torch.cat([p_ids, c_ids], 1)
        logits = model(input_ids=ids, attention_mask=torch.cat([p_mask, c_mask], 1)).logits[:, -4:-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, c_ids.unsqueeze(-1)).squeeze(-1)
    # ratios exp(+-0.3) fall outside the clip range [0.8, 1.2]; exp(+-0.05) inside
    delta = torch.tensor([[0.3, -0.05, 0.05], [-0.3, 0.3, 0.0], [0.05, -0.3, 0.3], [0.3, 0.0, 0.0]])
    return {
        "prompt_ids": p_ids,
        "prompt_mask": p_mask,
        "completion_ids": c_ids,
        "completion_mask": c_mask,
        "advantages": torch.tensor([1.0, -0.5, 2.0, -1.5]),
        "old_per_token_logps": logp - delta,
        "num_items_in_batch": c_mask.sum(),
        "serl_actor_items": c_mask[:2].sum(),
        "serl_judge_items": c_mask[2:].sum(),
        "serl_role": torch.tensor([0, 0, 1, 1]),
    }


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize(
    "overrides,epoch,weights",
    [
        (dict(loss_schedule="constant", actor_loss_weight=0.7, judge_loss_weight=0.3), 0.0, (0.7, 0.3)),
        (dict(max_steps=-1, num_train_epochs=2), 0.5, (0.25, 0.75)),  # alpha = 0.5 / 2
        (dict(max_steps=-1, num_train_epochs=2), 0.0, (0.0, 1.0)),  # the Judge alone at the start
    ],
)
def test_loss_matches_hand_computation(tmp_path, overrides, epoch, weights, loss_type):
    trainer = make_trainer(tmp_path, loss_type=loss_type, **overrides)
    trainer.model.train()
    trainer.state.epoch = epoch
    model = trainer.model
    batch = _fixed_batch(model)
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        l_actor = _hand_loss(
            model,
            *(
                batch[k][:2]
                for k in (
                    "prompt_ids",
                    "prompt_mask",
                    "completion_ids",
                    "completion_mask",
                    "advantages",
                    "old_per_token_logps",
                )
            ),
            loss_type=loss_type,
        )
        l_judge = _hand_loss(
            model,
            *(
                batch[k][2:]
                for k in (
                    "prompt_ids",
                    "prompt_mask",
                    "completion_ids",
                    "completion_mask",
                    "advantages",
                    "old_per_token_logps",
                )
            ),
            loss_type=loss_type,
        )
    alpha, beta = weights
    assert trainer.loss_weights() == pytest.approx(weights)
    assert float(loss.detach()) == pytest.approx(alpha * float(l_actor) + beta * float(l_judge), abs=1e-5)
    metrics = trainer._metrics["train"]
    assert metrics["serl/judge_loss"][-1] == pytest.approx(float(l_judge), abs=1e-5)
    if alpha > 0:
        assert metrics["serl/actor_loss"][-1] == pytest.approx(float(l_actor), abs=1e-5)
    else:
        assert "serl/actor_loss" not in metrics  # the actor rows are skipped, not computed
    # the clipping mattered: without it the judge loss would differ
    assert float(l_judge) != pytest.approx(-float(batch["advantages"][2:].mean()), abs=1e-3)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_config_and_trainer_errors(tmp_path):
    def config(**kw):
        base = dict(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2)
        return SERLConfig(**base, **kw, report_to=[], bf16=False, use_cpu=True)

    with pytest.raises(SERLConfigError, match="num_judgments"):
        config(num_judge_generations=3)
    with pytest.raises(SERLConfigError, match="max_judge_completion_length"):
        config(max_judge_completion_length=0)
    with pytest.raises(SERLConfigError, match="loss_schedule"):
        config(loss_schedule="cosine")
    with pytest.raises(SERLConfigError, match="alpha_cap"):
        config(alpha_cap=-1.0)
    model, tok = tiny_causal_lm(0)
    with pytest.raises(SERLConfigError, match="reward_funcs"):
        SERLTrainer(model, args=None, processing_class=tok, reward_funcs=[len])


def test_lora_step_trains_only_the_adapter(tmp_path):
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = make_trainer(tmp_path, peft_config=lora, loss_schedule="constant", learning_rate=5e-2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert moved and all("lora_" in n for n in moved)


def test_prompt_text_for_the_judge():
    from zjulab.serl.trainer import _text_of, serl_actor_reward

    assert _text_of("plain") == "plain"
    assert _text_of([{"role": "assistant", "content": "answer"}]) == "answer"
    sys_user = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain tides."}]
    assert _text_of(sys_user) == "Explain tides."
    dialogue = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Explain tides."},
    ]
    assert _text_of(dialogue) == "user: Hi\n\nassistant: Hello\n\nuser: Explain tides."
    blocks = [
        {"role": "user", "content": [{"type": "text", "text": "Explain"}, {"type": "text", "text": "tides."}]}
    ]
    assert _text_of(blocks) == "Explain tides."
    with pytest.raises(SERLInputError):
        _text_of(42)
    with pytest.raises(SERLConfigError, match="computed by SERLTrainer"):
        serl_actor_reward([], [])


def test_gradient_accumulation_splits_the_joined_batch(tmp_path):
    trainer = make_trainer(
        tmp_path,
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        steps_per_generation=2,
        loss_schedule="constant",
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    # 6 actor + 12 judge rows were shuffled into two micro-batches of 9 and both roles were trained
    assert trainer._buffered_inputs is not None and len(trainer._buffered_inputs) == 2
    assert [int(b["serl_role"].numel()) for b in trainer._buffered_inputs] == [9, 9]
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    logs = trainer.state.log_history[0]
    assert "serl/actor_loss" in logs and "serl/judge_loss" in logs


def _accumulated_grad(tmp_path, batch, accumulation, loss_type, seed=0, **extra):
    trainer = make_trainer(
        tmp_path / f"ga{accumulation}{loss_type}{extra}",
        num_generations=2,
        per_device_train_batch_size=4 // accumulation,
        gradient_accumulation_steps=accumulation,
        loss_type=loss_type,
        loss_schedule="constant",
        actor_loss_weight=0.7,
        judge_loss_weight=0.3,
        **extra,
    )
    trainer.current_gradient_accumulation_steps = accumulation
    trainer.model.train()
    trainer._generate_and_score_completions = lambda inputs: batch
    trainer._buffered_inputs, trainer._step = None, 0
    trainer.model.zero_grad()
    torch.manual_seed(seed)  # the shuffle
    total, roles = 0.0, []
    for _ in range(accumulation):
        micro = trainer._prepare_inputs([{"prompt": p} for p in PROMPTS for _ in range(2)])
        roles.append(micro["serl_role"].tolist())
        loss = trainer.compute_loss(trainer.model, micro)
        loss.backward()
        total += float(loss.detach())
        trainer._step += 1
    grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    return grad, total, roles, trainer


def _fixed_generation(tmp_path, loss_type):
    source = make_trainer(
        tmp_path / "src", num_generations=2, per_device_train_batch_size=4, loss_type=loss_type
    )
    source.model.train()
    torch.manual_seed(1)
    batch = source._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(2)])
    lengths = [8, 3, 6, 1, 4, 2, 3, 1]
    width = batch["completion_mask"].size(1)
    batch["completion_mask"] = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    batch["advantages"] = torch.tensor([1.0, -0.5, 0.3, -0.8, 0.9, -0.9, 0.4, -0.2])
    return batch


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo"])
def test_judge_micro_batches_give_the_same_gradient(tmp_path, loss_type):
    batch = _fixed_generation(tmp_path, loss_type)
    ref, ref_loss, _, _ = _accumulated_grad(tmp_path, batch, 1, loss_type)
    for size in (1, 3):
        grad, loss, _, _ = _accumulated_grad(tmp_path, batch, 1, loss_type, judge_micro_batch_size=size)
        torch.testing.assert_close(grad, ref, atol=1e-6, rtol=1e-4)
        assert loss == pytest.approx(ref_loss, abs=1e-5)
    with pytest.raises(SERLConfigError, match="judge_micro_batch_size"):
        make_trainer(tmp_path / "bad", judge_micro_batch_size=0)


@pytest.mark.parametrize(
    ("loss_type", "extra"),
    [
        ("grpo", {}),
        ("dapo", {}),
        ("dr_grpo", {}),
        ("sapo", {}),
        ("cispo", {}),
        ("grpo", {"mask_truncated_completions": True, "scale_rewards": "batch"}),
        ("grpo", {"num_iterations": 2}),
        ("dapo", {"num_iterations": 2, "epsilon": 0.05}),
    ],
)
def test_per_row_weights_equal_across_gradient_accumulation(tmp_path, loss_type, extra):
    """The accumulated gradient (so every row's weight) is the same at accumulation 1, 2 and 4."""
    source = make_trainer(
        tmp_path / "src", num_generations=2, per_device_train_batch_size=4, loss_type=loss_type, **extra
    )
    source.model.train()
    torch.manual_seed(1)
    batch = source._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(2)])
    assert batch["serl_role"].tolist() == [0] * 4 + [1] * 4
    # rows of unequal length and unequal advantages, so that any unequal weighting shows
    lengths = [8, 3, 6, 1, 4, 2, 3, 1]
    width = batch["completion_mask"].size(1)
    batch["completion_mask"] = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    batch["advantages"] = torch.tensor([1.0, -0.5, 0.3, -0.8, 0.9, -0.9, 0.4, -0.2])
    if extra.get("num_iterations", 1) > 1:
        # a later iteration over the same rollouts: the sampling policy differs, so ratios clip
        old = batch["old_per_token_logps"]
        assert old is not None and old.shape == batch["completion_mask"].shape
        batch["old_per_token_logps"] = old + 0.3 * torch.randn(
            old.shape, generator=torch.Generator().manual_seed(2)
        )
    ref, ref_loss, _, _ = _accumulated_grad(tmp_path, batch, 1, loss_type, **extra)
    assert ref.abs().sum() > 0
    for acc in (2, 4):
        for seed in range(4):  # several shuffles
            grad, loss, roles, trainer = _accumulated_grad(tmp_path, batch, acc, loss_type, seed, **extra)
            # every micro-batch holds the same number of rows of each role
            assert all(r.count(0) == 4 // acc and r.count(1) == 4 // acc for r in roles)
            torch.testing.assert_close(grad, ref, atol=1e-6, rtol=1e-4)
            assert loss == pytest.approx(ref_loss, abs=1e-5)
    # the per-role losses are logged once per optimizer step, on the scale of the loss
    logged = trainer._metrics["train"]
    assert len(logged["serl/actor_loss"]) == 1 and len(logged["serl/judge_loss"]) == 1
    assert 0.7 * logged["serl/actor_loss"][0] + 0.3 * logged["serl/judge_loss"][0] == pytest.approx(
        loss, abs=1e-5
    )
    # TRL's loss metrics are kept per role
    assert "actor/entropy" in logged and "judge/entropy" in logged and "entropy" not in logged
    if extra.get("num_iterations", 1) > 1:  # the ratios were clipped on both roles' rows
        assert max(logged["actor/clip_ratio/region_mean"]) > 0
        assert max(logged["judge/clip_ratio/region_mean"]) > 0


def test_entropy_options_that_would_change_the_gradient_are_refused(tmp_path):
    """TRL's entropy bonus and quantile are per forward pass, its adaptive controller per loss call."""
    for extra in ({"entropy_coef": 0.1}, {"top_entropy_quantile": 0.5}):
        with pytest.raises(SERLConfigError, match="judge_micro_batch_size cannot be combined"):
            make_trainer(tmp_path / f"jmb{list(extra)}", judge_micro_batch_size=1, **extra)
    # without chunking both are TRL's per-micro-batch terms, taken once per role
    make_trainer(tmp_path / "plain", entropy_coef=0.1, top_entropy_quantile=0.5)
    with pytest.raises(SERLConfigError, match="use_adaptive_entropy"):
        make_trainer(tmp_path / "adaptive", use_adaptive_entropy=True, entropy_coef=0.01)
    from trl import GRPOConfig

    plain = GRPOConfig(
        output_dir=str(tmp_path / "g"), use_adaptive_entropy=True, entropy_coef=0.01,
        per_device_train_batch_size=2, num_generations=2, use_cpu=True, bf16=False, report_to=[],
    )  # fmt: skip
    with pytest.raises(SERLConfigError, match="use_adaptive_entropy"):
        SERLConfig.from_grpo_config(plain)


def test_judge_completions_get_their_own_table(tmp_path):
    import pandas as pd

    trainer = make_trainer(tmp_path, log_completions=True, loss_schedule="constant")
    trainer.train()
    out = tmp_path / "out" / "completions"
    judge_files = sorted(out.glob("judge_completions_*.parquet"))
    assert judge_files, list(out.iterdir())
    df = pd.read_parquet(judge_files[-1])
    # two prompt groups of C(3,2) * K = 6 judge rollouts each
    assert len(df) == 12
    assert set(df["verdict"].dropna().astype(int)) <= {1, 2}
    assert "judge_serl_judge_reward" in df.columns
    assert df["judge_serl_judge_reward"].isin([-1.0, 0.0, 1.0]).all()
    # the actor table stays TRL's: one row per actor rollout
    actor = pd.read_parquet(sorted(out.glob("completions_*.parquet"))[-1])
    assert len(actor) == 6


def test_a_users_folder_is_never_trained_into(tmp_path):
    user = tmp_path / "out"
    user.mkdir()
    (user / "README.md").write_text("my project\n")
    (user / "config.json").write_text('{"mine": true}\n')
    with pytest.raises(SERLConfigError, match=r"README\.md, config\.json"):
        make_trainer(tmp_path, save_strategy="steps", save_steps=1)
    assert sorted(p.name for p in user.iterdir()) == ["README.md", "config.json"]
    assert (user / "README.md").read_text() == "my project\n"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SERLConfigError, match="is a file"):
        make_trainer(tmp_path, output_dir=str(tmp_path / "a_file"))


def test_an_earlier_runs_folder_is_reused_and_resumed(tmp_path):
    from zjulab.serl.outputs import RUN_MARKER

    trainer = make_trainer(tmp_path, save_strategy="steps", save_steps=1)
    trainer.train()
    out = tmp_path / "out"
    assert (out / RUN_MARKER).is_file() and (out / "checkpoint-1").is_dir()
    again = make_trainer(tmp_path, save_strategy="steps", save_steps=1, max_steps=2)
    again.train(resume_from_checkpoint=True)
    assert again.state.global_step == 2 and (out / "checkpoint-2").is_dir()
    # an explicit save into somebody else's folder is refused too
    user = tmp_path / "notes"
    user.mkdir()
    (user / "todo.txt").write_text("keep me")
    with pytest.raises(SERLConfigError, match=r"todo\.txt"):
        again.save_model(str(user))
    assert [p.name for p in user.iterdir()] == ["todo.txt"]


def test_a_judge_rollout_stopped_at_the_length_limit_has_no_verdict(tmp_path):
    import pandas as pd

    # the tiny model never writes an end of sequence: by default no cut-off rollout has a verdict,
    # even though the parser would read one (always "1") from its text
    trainer = make_trainer(
        tmp_path, read_truncated_verdicts=False, log_completions=True, loss_schedule="constant"
    )
    trainer.verdict_parser = lambda text: 1
    trainer.train()
    assert all(v is None for g in trainer.last_judgments for v in g.verdicts)
    assert all((g.judge_rewards == -1).all() for g in trainer.last_judgments)
    assert trainer.state.log_history[0]["serl/invalid_rate"] == 1.0
    table = pd.read_parquet(sorted((tmp_path / "out" / "completions").glob("judge_*.parquet"))[-1])
    assert table["verdict"].isna().all()  # the table shows the verdicts as scored
    # rollouts whose last token ends the sequence are read
    other = make_trainer(tmp_path / "b", read_truncated_verdicts=False, loss_schedule="constant")
    other.verdict_parser = lambda text: 1
    other.eos_token_ids = list(range(len(other.processing_class)))
    other.train()
    assert all(v == 1 for g in other.last_judgments for v in g.verdicts)
