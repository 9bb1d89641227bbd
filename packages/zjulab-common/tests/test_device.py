import pytest
import torch

from zjulab.common import ConfigError, DeviceNotAvailableError, resolve_device, resolve_dtype


@pytest.fixture()
def fake_cuda(monkeypatch):
    """Pretend two CUDA devices are visible; bf16 support is switchable."""
    state = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    return state


@pytest.fixture()
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("zjulab.common.device._mps_available", lambda: False)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("auto", "cpu"),
        (None, "cpu"),
        ("cpu", "cpu"),
        (" CPU ".strip().lower(), "cpu"),
        (torch.device("cpu"), "cpu"),
    ],
)
def test_cpu_machine_device_table(no_accelerator, arg, expected):
    assert resolve_device(arg) == torch.device(expected)


@pytest.mark.parametrize(
    ("arg", "msg"), [("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"), ("mps", "MPS")]
)
def test_unavailable_devices_raise(no_accelerator, arg, msg):
    with pytest.raises(DeviceNotAvailableError, match=msg):
        resolve_device(arg)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("auto", torch.device("cuda", 0)),
        ("cuda", torch.device("cuda", 0)),
        ("cuda:1", torch.device("cuda", 1)),
    ],
)
def test_gpu_machine_device_table(fake_cuda, arg, expected):
    assert resolve_device(arg) == expected


def test_cuda_index_out_of_range(fake_cuda):
    with pytest.raises(DeviceNotAvailableError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


def test_not_a_device_name():
    with pytest.raises(ConfigError, match="not a device name"):
        resolve_device("gpu-please")


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("auto", torch.float32),
        (None, torch.float32),
        ("fp32", torch.float32),
        ("float16", torch.float16),
        ("half", torch.float16),
        ("bf16", torch.bfloat16),
        ("torch.bfloat16", torch.bfloat16),
        (torch.float64, torch.float64),
    ],
)
def test_dtype_table_on_cpu(no_accelerator, dtype, expected):
    assert resolve_dtype(dtype, "cpu") is expected


def test_auto_dtype_on_gpu_follows_bf16_support(fake_cuda):
    assert resolve_dtype("auto", "cuda") is torch.bfloat16
    fake_cuda["bf16"] = False
    assert resolve_dtype("auto", "cuda") is torch.float16
    with pytest.raises(ConfigError, match="bfloat16 is not supported"):
        resolve_dtype("bf16", "cuda")


@pytest.mark.parametrize("bad", ["int8", "fp8ish", torch.int64])
def test_bad_dtypes(bad):
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype(bad, "cpu")
