"""The relevance discriminator: learns the synthetic colour task, saves and loads, LoRA."""

import pytest
import torch

from zjulab.common.testing import save_tiny, tiny_causal_lm
from zjulab.rtt import (
    DiscriminatorConfig,
    DiscriminatorStoreError,
    DiscriminatorTrainer,
    RelevanceDiscriminator,
    RelevanceQuery,
    RTTConfigError,
    Rubric,
    colour_examples,
    token_f1,
)


def _disc(seed=1):
    model, tok = tiny_causal_lm(seed)
    return RelevanceDiscriminator.from_causal_lm(model, tok, max_length=256)


def test_token_f1_by_hand():
    s = token_f1([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])  # tp 2, fp 1, fn 1
    assert (s.precision, s.recall, s.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert token_f1([0, 0], [0, 0]).f1 == 0.0


def test_learns_mention_a_colour():
    disc = _disc()
    trainer = DiscriminatorTrainer(
        disc, DiscriminatorConfig(learning_rate=1e-2, epochs=2, batch_size=8, seed=0)
    )
    held = colour_examples(40, seed=1)
    before = trainer.evaluate(held)
    losses = trainer.train(colour_examples(160, seed=0))
    after = trainer.evaluate(held)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < losses[0] / 5
    assert before.f1 < 0.5
    assert after.f1 > 0.9, after


def test_loss_counts_response_tokens_only():
    disc = _disc()
    trainer = DiscriminatorTrainer(disc, DiscriminatorConfig())
    ids = torch.tensor([[5, 6, 7, 8]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.tensor([[-100, -100, 1, 0]]),
    }
    logits = disc(ids, batch["attention_mask"])
    by_hand = (torch.nn.functional.softplus(-logits[0, 2]) + torch.nn.functional.softplus(logits[0, 3])) / 2
    assert trainer.loss(batch).item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_save_load_round_trip(tmp_path):
    disc = _disc()
    with torch.no_grad():
        disc.head.bias.fill_(0.3)
    ex = colour_examples(3, seed=2)
    ids = [disc.tokenizer(e.response, add_special_tokens=False)["input_ids"] for e in ex]
    before = disc.predict_ids([e.criterion for e in ex], ids)
    disc.save(tmp_path / "disc")
    back = RelevanceDiscriminator.from_pretrained(tmp_path / "disc", device="cpu", dtype="float32")
    after = back.predict_ids([e.criterion for e in ex], ids)
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-6)
    assert back.instruction == disc.instruction and back.max_length == 256


def test_load_errors(tmp_path):
    with pytest.raises(DiscriminatorStoreError, match="not a saved discriminator"):
        RelevanceDiscriminator.load(tmp_path)
    disc = _disc()
    disc.save(tmp_path / "d")
    meta = tmp_path / "d" / "rtt_discriminator.json"
    meta.write_text(meta.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(DiscriminatorStoreError, match="format_version 99"):
        RelevanceDiscriminator.load(tmp_path / "d")


def test_lora_trains_only_adapter_and_head(tmp_path):
    model, tok = tiny_causal_lm(3)
    base_dir = save_tiny(model.model, tok, tmp_path / "base")
    disc = RelevanceDiscriminator.from_pretrained(base_dir, device="cpu", dtype="float32", max_length=256)
    trainer = DiscriminatorTrainer(disc, DiscriminatorConfig(lora_r=4, learning_rate=1e-2, batch_size=8))
    assert disc.is_lora
    trainable = {n for n, p in disc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    frozen = {n: p.detach().clone() for n, p in disc.named_parameters() if not p.requires_grad}
    trainer.train(colour_examples(16, seed=0))
    for n, p in disc.named_parameters():
        if n in frozen:
            assert torch.equal(frozen[n], p)
    disc.save(tmp_path / "lora")
    back = RelevanceDiscriminator.load(tmp_path / "lora", device="cpu", dtype="float32")
    ids = [tok("a red car", add_special_tokens=False)["input_ids"]]
    assert torch.allclose(
        disc.predict_ids(["Mention a colour."], ids)[0],
        back.predict_ids(["Mention a colour."], ids)[0],
        atol=1e-5,
    )


def test_relevance_for_policy_tokens_same_and_other_vocab():
    disc = _disc()
    q = RelevanceQuery(
        Rubric.judge("Mention a colour."),
        disc.tokenizer("a red car", add_special_tokens=False)["input_ids"],
        "a red car",
    )
    same = disc.token_relevance([q], disc.tokenizer)[0]
    assert same.shape == (len(q.completion_ids),)
    assert torch.allclose(same, disc.predict_ids(["Mention a colour."], [q.completion_ids])[0])

    class OtherVocab:  # a policy tokenizer with a different vocabulary: one token per character
        def get_vocab(self):
            return {"x": 0}

        def decode(self, ids, skip_special_tokens=True):
            return "a red car"[: len(ids)]

    q2 = RelevanceQuery(q.rubric, list(range(9)), "a red car")
    other = disc.token_relevance([q2], OtherVocab())[0]
    offsets, w = disc.predict("Mention a colour.".split("|"), ["a red car"])[0]
    # each character takes the weight of the discriminator token covering it
    for c in range(9):
        cover = [float(wi) for (a, b), wi in zip(offsets, w) if a <= c < b]
        assert other[c].item() == pytest.approx(max(cover) if cover else 0.0, abs=1e-6)


def test_bad_max_length():
    model, tok = tiny_causal_lm(0)
    with pytest.raises(RTTConfigError, match="max_length"):
        RelevanceDiscriminator.from_causal_lm(model, tok, max_length=4)


def test_shared_prefix_equals_full_rows():
    disc = _disc(seed=4)
    with torch.no_grad():
        disc.head.weight.normal_(std=0.5)
    ex = colour_examples(7, seed=5)
    ids = [disc.tokenizer(e.response, add_special_tokens=False)["input_ids"] for e in ex]
    crits = ["Mention a colour.", "Do not use any commas."] * 3 + ["Mention a colour."]
    shared = disc.predict_ids(crits, ids, batch_size=2, share_prefix=True)
    full = disc.predict_ids(crits, ids, batch_size=3, share_prefix=False)
    for a, b in zip(shared, full):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    assert max(float((a - a.mean()).abs().max()) for a in full) > 1e-3  # the weights vary by token


def test_lora_without_peft_is_a_typed_error(monkeypatch):
    import sys

    from zjulab.common.errors import MissingDependencyError

    disc = _disc()
    monkeypatch.setitem(sys.modules, "peft", None)  # as if zjulab-rtt[peft] were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'zjulab-rtt\[peft\]'"):
        disc.enable_lora(r=4)
