from __future__ import annotations

import numpy as np
import pytest
import torch

from zjulab.common.testing import save_tiny, tiny_causal_lm, tiny_cross_encoder, tiny_encoder
from zjulab.skillrouter import Skill, TrainEncoderConfig, TrainRerankerConfig
from zjulab.skillrouter.encoder_training import encoder_loss, info_nce_loss, train_encoder
from zjulab.skillrouter.mining import TrainingExample
from zjulab.skillrouter.reranker_training import group_loss, reranker_loss, train_reranker


def examples():
    def sk(i, body):
        return Skill(name=f"s{i}", description="tools", body=body, id=f"s{i}")

    pos = [sk(0, "merge pdf pages"), sk(1, "resize png images"), sk(2, "parse nginx logs")]
    neg = [sk(3, "send smtp email"), sk(4, "rotate log files"), sk(5, "ocr scanned pdf")]
    qs = ["combine two pdf files", "make thumbnails of photos", "count 500 errors in access logs"]
    return [TrainingExample(q, p, [n, neg[(i + 1) % 3]]) for i, (q, p, n) in enumerate(zip(qs, pos, neg))]


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # row 0 cosines: 1, 0, 1/sqrt2 -> logits /0.5
    l0 = -np.log(np.exp(2) / (np.exp(2) + np.exp(0) + np.exp(2 / np.sqrt(2))))
    assert float(info_nce_loss(q, c, temperature=0.5)) == pytest.approx(l0, rel=1e-5)


def test_info_nce_agrees_with_sentence_transformers_mnrl():
    try:
        from sentence_transformers.util import cos_sim
    except ImportError:
        pytest.skip("sentence-transformers missing")
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(4, 8, generator=g), torch.randn(12, 8, generator=g)
    ref = torch.nn.functional.cross_entropy(cos_sim(q, c) * 20.0, torch.arange(4))
    assert float(info_nce_loss(q, c, 0.05)) == pytest.approx(float(ref), rel=1e-5)


def test_group_loss_values():
    s = torch.tensor([[2.0, 0.0, 0.0]])
    assert float(group_loss(s, "listwise")) == pytest.approx(-np.log(np.exp(2) / (np.exp(2) + 2)), rel=1e-6)
    point = (np.log1p(np.exp(-2.0)) + 2 * np.log(2)) / 3
    assert float(group_loss(s, "pointwise")) == pytest.approx(point, rel=1e-6)


def test_one_encoder_step_lowers_loss(tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    model, tok = tiny_encoder(seed=1)
    path = save_tiny(model, tok, tmp_path / "enc")
    st = SentenceTransformer(modules=[Transformer(str(path)), Pooling(32, "mean")], device="cpu")
    ex = examples()
    cfg = TrainEncoderConfig(
        output_dir=str(tmp_path / "out"), max_steps=1, batch_size=3, learning_rate=5e-3, warmup_ratio=0.0
    )
    before = encoder_loss(st, ex, cfg)
    res = train_encoder(st, ex, cfg, device="cpu")
    after = encoder_loss(res.model, ex, cfg)
    assert res.steps == 1
    assert after < before
    assert (tmp_path / "out" / "modules.json").is_file()


@pytest.mark.parametrize(
    ("kind", "loss", "factory"),
    [
        ("yes_no", "listwise", tiny_causal_lm),
        ("yes_no", "pointwise", tiny_causal_lm),
        ("cross_encoder", "listwise", tiny_cross_encoder),
    ],
)
def test_one_reranker_step_lowers_loss(tmp_path, kind, loss, factory):
    model, tok = factory(seed=2)
    ex = examples()
    cfg = TrainRerankerConfig(
        output_dir=str(tmp_path / loss),
        kind=kind,
        loss=loss,
        group_size=3,
        max_steps=1,
        batch_size=3,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        max_length=512,
    )
    before = reranker_loss(model, tok, ex, cfg)
    res = train_reranker(model, ex, cfg, tokenizer=tok, device="cpu")
    after = reranker_loss(res.model, tok, ex, cfg)
    assert res.steps == 1 and after < before
    assert (tmp_path / loss / "config.json").is_file()


def test_encoder_training_batches_keep_relevant_examples_apart(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    import zjulab.skillrouter.encoder_training as et

    model, tok = tiny_encoder(seed=1)
    path = save_tiny(model, tok, tmp_path / "enc")
    st = SentenceTransformer(modules=[Transformer(str(path)), Pooling(32, "mean")], device="cpu")
    ex = examples()
    # query 0 finds s1 (query 1's positive) partially relevant: the two may not share a batch
    ex[0] = TrainingExample(
        ex[0].query, ex[0].positive, ex[0].negatives, relevant_ids=frozenset({"s0", "s1"})
    )
    seen = []
    real = et.relevance_aware_batches

    def spy(examples, batch_size, order):
        out = real(examples, batch_size, order)
        seen.append(out)
        return out

    monkeypatch.setattr(et, "relevance_aware_batches", spy)
    cfg = TrainEncoderConfig(output_dir=str(tmp_path / "out"), max_steps=2, batch_size=3, warmup_ratio=0.0)
    res = train_encoder(st, ex, cfg, device="cpu")
    assert res.steps == 2 and seen
    assert all(not ({0, 1} <= set(b)) for batches in seen for b in batches)
    assert et.batch_conflicts(ex, [[0, 1, 2]]) == 1
