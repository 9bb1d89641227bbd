"""The command line: inspect a store, evaluate on a tiny LoCoMo file, error exits."""

from __future__ import annotations

import pytest

from zjulab.fluxmem import FluxMemConfig, FluxMemory
from zjulab.fluxmem.cli import main


@pytest.fixture
def store(enc, tmp_path):
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0))
    mem.add(["Ana moved to Lisbon", "Ana has a cat"], user_id="ana")
    mem.feedback("Where is Ana?", "success", user_id="ana")
    mem.consolidate(user_id="ana")
    return mem.save(tmp_path / "store"), mem


def test_inspect_prints_counts_and_dot(store, capsys):
    path, _ = store
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "nodes: {'episodic': 2, 'procedural': 3}" in out
    assert "edges by stage: {'consolidation': 4, 'formation': 1}" in out
    assert "digraph fluxmem {" in out and "-> " in out


def test_inspect_html_to_file(store, tmp_path, capsys):
    path, mem = store
    centre = mem.get_all(user_id="ana")["results"][0]["id"]
    out = tmp_path / "n.html"
    assert (
        main(
            [
                "inspect",
                str(path),
                "--node",
                centre[:10],
                "--hops",
                "2",
                "--format",
                "html",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "Ana moved to Lisbon" in page and "<td>next</td>" in page
    assert main(["inspect", str(path), "--node", "zzzz"]) == 2


def test_eval_locomo_with_hashing_encoder(tiny_locomo_file, capsys):
    path = tiny_locomo_file
    assert main(["eval-locomo", str(path), "--encoder", "hashing", "--chat", "none"]) == 0
    out = capsys.readouterr().out
    assert "conv-t" in out and "| fluxmem | recall@10 |" in out and "| flat_rag | recall@5 |" in out


def test_errors_exit_2(tmp_path, capsys):
    assert main(["eval-locomo", str(tmp_path / "none.json"), "--encoder", "hashing"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nostore")]) == 2


def test_inspect_out_never_replaces_a_users_file(store, tmp_path, capsys):
    path, _ = store
    mine = tmp_path / "notes.dot"
    mine.write_text("my notes")
    assert main(["inspect", str(path), "--out", str(mine)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert mine.read_text() == "my notes"
    assert main(["inspect", str(path), "--out", str(tmp_path)]) == 2
    assert main(["inspect", str(path), "--out", str(mine), "--force"]) == 0
    assert mine.read_text().startswith("digraph fluxmem {")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.dot", "store"]  # no temp file left


@pytest.mark.parametrize("env", [{}, {"NO_COLOR": "1", "FORCE_COLOR": "1"}])
def test_cli_output_has_no_ansi_codes(env, tmp_path):
    import os
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")} | env
    out = subprocess.run(
        [sys.executable, "-m", "zjulab.fluxmem.cli", "demo", "--encoder", "hashing", "--chat", "none"],
        capture_output=True,
        text=True,
        timeout=120,
        env=full,
    )
    assert out.returncode == 0, out.stderr
    assert "feedback:" in out.stdout and "consolidation:" in out.stdout
    assert "\x1b[" not in out.stdout + out.stderr
