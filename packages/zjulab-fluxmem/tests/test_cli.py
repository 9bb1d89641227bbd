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
