"""SERL on two torchrun (gloo) processes: one step completes, replicas stay identical, micro-batches balanced."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "scripts" / "two_process_worker.py"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_two_process_step(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    # torchrun and its workers get their own session: on a timeout every one of them is ended
    # (killing torchrun alone left a blocked worker running) and their output is shown
    proc = subprocess.Popen(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s; its output:\n{stderr[-6000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    recs = sorted((json.loads(p.read_text()) for p in out.glob("result-*.json")), key=lambda r: r["rank"])
    assert [r["rank"] for r in recs] == [0, 1] and all(r["world"] == 2 for r in recs)
    # DDP kept the two replicas identical, and the step moved the weights
    assert recs[0]["checksum"] == pytest.approx(recs[1]["checksum"], rel=0, abs=1e-9)
    assert all(r["changed"] > 0 for r in recs)
    for r in recs:
        # each process generates 3 actor rows x 2 accumulation steps = 2 groups of N = 3 and
        # judges its own groups: 2 * C(3,2) * K = 12 judge rollouts
        assert r["judgments"] == 12
        # dealt evenly: every micro-batch has 3 actor and 6 judge rows
        assert [(roles.count(0), roles.count(1)) for roles in r["roles"]] == [(3, 6), (3, 6)]
        logs = r["logs"]
        assert "serl/actor_loss" in logs and "serl/judge_loss" in logs
    # the judge diagnostics are reduced over both processes, so both ranks log the same rates
    assert recs[0]["logs"]["serl/invalid_rate"] == recs[1]["logs"]["serl/invalid_rate"]
    assert recs[0]["logs"]["serl/consistency_rate"] == recs[1]["logs"]["serl/consistency_rate"]
