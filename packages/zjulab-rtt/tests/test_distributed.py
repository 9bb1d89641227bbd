"""A group split over two torchrun processes gets the same group-normalised credit as on one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "scripts" / "group_split_worker.py"


def _run(cmd, tmp_path, out_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("result-*.json"))]
    return [r for rec in sorted(recs, key=lambda rec: rec["rank"]) for r in rec["rows"]]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_group_token_norm_across_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    a, b = tmp_path / "a", tmp_path / "b"
    single = _run([sys.executable, str(WORKER), "4", str(a)], tmp_path, a)
    split = _run([torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), "2", str(b)], tmp_path, b)
    assert (
        [r["text"] for r in split]
        == [r["text"] for r in single]
        == ["no, yes", "yes no", "the car, the dog", "red blue"]
    )
    for a, b in zip(single, split):
        assert b["a_tok"] == pytest.approx(a["a_tok"], abs=1e-6)
    assert any(abs(v) > 0.5 for r in single for v in r["a_tok"])
