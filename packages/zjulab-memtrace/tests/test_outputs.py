"""Outputs never replace a user's file; a killed or concurrent writer never leaves a torn trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from zjulab.memtrace import EvidenceJudge, Gold, OutputExistsError, Tracer, attribute, load_trace, save_trace
from zjulab.memtrace.cli import main
from zjulab.memtrace.render import write_picture

USER_FILES = {
    "trace.json": '{"my": "own notes"}\n',
    "trace.attribution.json": "[1, 2, 3]\n",
    "trace.html": "<html>my report</html>\n",
    "trace.dot": "digraph mine { a -> b }\n",
    "notes.txt": "keep me\n",
}


def _trace():
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if "Milo" not in m]

    @tracer.operation("answer", outputs=("answer",))
    def answer(question, facts):
        return next((f for f in facts if "cat" in f), "I don't know")

    with tracer.trace("toy") as trace:
        answer("What is the cat called?", extract(["Ann: my cat is called Milo", "Bob: hi"]))
    return trace


def _fill(folder):
    folder.mkdir(exist_ok=True)
    for name, text in USER_FILES.items():
        (folder / name).write_text(text)


def _unchanged(folder):
    return all((folder / n).read_text() == t for n, t in USER_FILES.items())


def test_api_outputs_refuse_a_users_files(tmp_path):
    _fill(tmp_path)
    trace = _trace()
    att = attribute(trace, Gold("Milo", ("Ann: my cat is called Milo",)), EvidenceJudge())
    with pytest.raises(
        OutputExistsError, match=r"trace\.json: exists and was not written by zjulab-memtrace"
    ):
        save_trace(trace, tmp_path / "trace.json")
    with pytest.raises(OutputExistsError, match=r"trace\.html"):
        write_picture(trace, tmp_path / "trace", att)
    with pytest.raises(OutputExistsError, match="is a folder"):
        save_trace(trace, tmp_path)
    assert _unchanged(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(USER_FILES)  # no temporaries either
    # our own earlier outputs are replaced as usual
    out = tmp_path / "mine"
    for _ in range(2):
        save_trace(trace, out / "t.json")
        write_picture(trace, out / "t", att)
    assert sorted(p.name for p in out.iterdir()) == ["t.dot", "t.html", "t.json"]


def test_cli_outputs_refuse_a_users_files(tmp_path, capsys):
    trace_path = save_trace(_trace(), tmp_path / "run.json")
    mine = tmp_path / "run.attribution.json"
    mine.write_text("my attribution notes\n")
    (tmp_path / "run.html").write_text("<p>mine</p>\n")
    assert main(["attribute", str(trace_path), "--gold", "Milo"]) == 2
    assert main(["show", str(trace_path)]) == 2
    err = capsys.readouterr().err
    assert "run.attribution.json: exists and was not written" in err and "run.html" in err
    assert (
        mine.read_text() == "my attribution notes\n"
        and (tmp_path / "run.html").read_text() == "<p>mine</p>\n"
    )
    assert not (tmp_path / "run.dot").exists()  # nothing written when one target is refused
    assert main(["attribute", str(trace_path), "--gold", "Milo", "--out", str(tmp_path / "a.json")]) == 0
    assert main(["attribute", str(trace_path), "--gold", "Milo", "--out", str(tmp_path / "a.json")]) == 0


def test_demo_refuses_a_folder_holding_files_of_its_names(tmp_path, capsys):
    folder = tmp_path / "demo"
    _fill(folder)
    assert main(["demo", "--out", str(folder), "--encoder", "hashing"]) == 2
    assert "trace.json: exists and was not written" in capsys.readouterr().err
    assert _unchanged(folder) and sorted(p.name for p in folder.iterdir()) == sorted(USER_FILES)
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "afile"), "--encoder", "hashing"]) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    assert main(["demo", "--out", str(other), "--encoder", "hashing"]) == 0
    assert main(["demo", "--out", str(other), "--encoder", "hashing"]) == 0  # re-run over its own files
    assert (other / "notes.txt").read_text() == "keep me\n"


_WRITER = textwrap.dedent(
    """
    import sys
    from zjulab.memtrace import Tracer, save_trace

    tracer = Tracer()

    @tracer.operation("step", outputs=("out",))
    def step(xs, i):
        return [x + str(i) for x in xs]

    with tracer.trace("big") as trace:
        xs = ["a fact about the user " * 20] * 200
        for i in range(60):
            xs = step(xs, i)
    print("ready", flush=True)
    while True:
        save_trace(trace, sys.argv[1], redact=None)
    """
)


def _start_writer(script, target):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _kill_mid_write(proc, folder, timeout=30.0):
    """SIGKILL ``proc`` while one of its temporary files exists (a write in flight)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if folder.is_dir() and any(n.endswith(".tmp") for n in os.listdir(folder)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    return False


@pytest.mark.timeout(120)
def test_kill_9_during_writes_and_two_writers_leave_a_whole_trace(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    target = tmp_path / "out" / "trace.json"
    for _ in range(2):
        proc = _start_writer(script, target)
        assert _kill_mid_write(proc, target.parent)
        if target.exists():
            assert len(load_trace(target).operations) == 60  # never a torn file
    two = [_start_writer(script, target), _start_writer(script, target)]
    time.sleep(0.5)
    for p in two:
        assert _kill_mid_write(p, target.parent)
    assert len(load_trace(target).operations) == 60
    save_trace(load_trace(target), target, redact=None)  # the next write clears what killed ones left
    assert [p.name for p in target.parent.iterdir()] == ["trace.json"]
    assert json.loads(target.read_text())["name"] == "big"
