"""The same models on CUDA agree with CPU; dtype "auto" picks a half type there."""

import numpy as np
import pytest
import torch

from zjulab.common import (
    TransformersChatModel,
    TransformersEncoder,
    YesNoScorer,
    load_causal_lm,
    resolve_device,
    resolve_dtype,
)
from zjulab.common.testing import tiny_causal_lm, tiny_encoder

pytestmark = pytest.mark.gpu


def test_auto_resolves_to_cuda_and_half_precision():
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_dtype("auto", "cuda") in (torch.bfloat16, torch.float16)


def test_scorer_and_encoder_on_cuda_match_cpu():
    model, tok = tiny_causal_lm(seed=5)
    pairs = [("red fox", "The quick brown fox"), ("sql", "SELECT name FROM singer")]
    cpu = YesNoScorer(model, tok, device="cpu").score(pairs)
    gpu = YesNoScorer(model, tok, device="cuda").score(pairs)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
    enc, etok = tiny_encoder(seed=5)
    texts = ["a", "memory graphs for agents"]
    a = TransformersEncoder(enc, etok, device="cpu").encode(texts)
    b = TransformersEncoder(enc, etok, device="cuda").encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_chat_model_greedy_on_cuda_matches_cpu():
    model, tok = tiny_causal_lm(seed=6)
    conv = [[{"role": "user", "content": "tell me about the sea"}]]
    cpu = TransformersChatModel(model, tok, device="cpu", max_new_tokens=6).generate(conv)
    gpu = TransformersChatModel(model, tok, device="cuda", max_new_tokens=6).generate(conv)
    assert gpu == cpu


def test_loader_places_bf16_on_cuda(tiny_causal_lm_path):
    model = load_causal_lm(tiny_causal_lm_path, device="cuda", dtype="auto")
    p = next(model.parameters())
    assert p.device.type == "cuda" and p.dtype in (torch.bfloat16, torch.float16)
