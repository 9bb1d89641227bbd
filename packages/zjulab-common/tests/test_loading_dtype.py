"""Weight dtypes as model cards spell them."""

import pytest
import torch

from zjulab.common import ConfigError, load_causal_lm
from zjulab.common.transformers_chat import TransformersChatModel


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory, tiny_causal_lm):
    from zjulab.common.testing import save_tiny

    model, tok = tiny_causal_lm
    path = tmp_path_factory.mktemp("bf16")
    save_tiny(model.to(torch.bfloat16), tok, path)
    model.to(torch.float32)
    return path


def test_card_auto_keeps_the_checkpoint_dtype(bf16_checkpoint):
    m = load_causal_lm(bf16_checkpoint, device="cpu", torch_dtype="auto")
    assert next(m.parameters()).dtype == torch.bfloat16
    m = load_causal_lm(bf16_checkpoint, device="cpu", dtype="checkpoint")
    assert next(m.parameters()).dtype == torch.bfloat16


def test_zjulab_auto_and_explicit_dtypes(bf16_checkpoint):
    assert next(load_causal_lm(bf16_checkpoint, device="cpu").parameters()).dtype == torch.float32
    m = load_causal_lm(bf16_checkpoint, device="cpu", torch_dtype=torch.float16)
    assert next(m.parameters()).dtype == torch.float16
    m = load_causal_lm(bf16_checkpoint, device="cpu", torch_dtype="bfloat16")
    assert next(m.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="disagree"):
        load_causal_lm(bf16_checkpoint, device="cpu", dtype="fp16", torch_dtype="bfloat16")


def test_chat_model_honours_the_card_spelling(bf16_checkpoint):
    chat = TransformersChatModel(str(bf16_checkpoint), device="cpu", torch_dtype="auto")
    assert next(chat.model.parameters()).dtype == torch.bfloat16
