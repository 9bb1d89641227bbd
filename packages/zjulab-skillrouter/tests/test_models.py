from __future__ import annotations

import numpy as np
import pytest

from zjulab.common.errors import ModelNotAvailableError
from zjulab.common.scorers import CrossEncoderScorer, YesNoScorer
from zjulab.common.testing import save_tiny, tiny_cross_encoder
from zjulab.skillrouter import RouterConfig, SkillRouter, load_skill_encoder, load_skill_reranker
from zjulab.skillrouter.models import QUERY_PROMPT


def test_reranker_kind_is_detected_from_the_checkpoint(tmp_path, tiny_causal_lm_path):
    model, tok = tiny_cross_encoder(seed=0)
    ce_path = save_tiny(model, tok, tmp_path / "ce")
    ce = load_skill_reranker(ce_path, device="cpu")
    yn = load_skill_reranker(tiny_causal_lm_path, device="cpu")
    assert isinstance(ce, CrossEncoderScorer) and isinstance(yn, YesNoScorer)
    assert yn.assistant_prefix == ""  # not a qwen3 checkpoint
    assert ce.score([("q", "d")]).shape == (1,)


def test_encoder_by_path_uses_mean_pooling_for_bert(tiny_encoder_path):
    enc = load_skill_encoder(tiny_encoder_path, device="cpu")
    assert enc.pooling == "mean"
    v = enc.encode(["merge pdf files", "resize images"])
    assert v.shape == (2, enc.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_router_loads_encoder_lazily_by_path(tiny_encoder_path, pool):
    r = SkillRouter(str(tiny_encoder_path), None, RouterConfig(rerank=False, profile="embedded"))
    assert r._encoder is None
    r.index(pool)
    assert r.encoder.dim == 32 and r._query_prompt == ""  # the embedded profile has no instruction
    assert r.encoder.max_length == 256
    assert len(r.route("merge pdf", k=3)) == 3
    default = SkillRouter(str(tiny_encoder_path), None, RouterConfig(rerank=False))
    assert default._query_prompt == QUERY_PROMPT and default.encoder.max_length == 4096


def test_missing_model_is_a_typed_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError):
        load_skill_encoder("zjulab-test/definitely-not-a-model", device="cpu")


def test_max_length_is_settable_from_the_router_and_the_cli(tiny_encoder_path, pool, tmp_path):
    from zjulab.skillrouter.cli import _config, build_parser

    r = SkillRouter(str(tiny_encoder_path), None, RouterConfig(rerank=False, encoder_max_length=128))
    assert r.encoder.max_length == 128
    args = build_parser().parse_args(
        ["index", str(tmp_path), "--out", str(tmp_path / "o"), "--max-length", "77"]
    )
    cfg = _config(args)
    assert (cfg.encoder_max_length, cfg.reranker_max_length) == (77, 77)
    assert (
        _config(build_parser().parse_args(["index", str(tmp_path), "--out", "o"])).encoder_max_length == 4096
    )
