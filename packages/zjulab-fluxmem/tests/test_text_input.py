"""Text UTF-8 cannot encode (lone surrogates) is refused at every entry point, naming the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.fluxmem import FluxMemConfig, FluxMemory, MemoryInputError, ScopeError
from zjulab.fluxmem.errors import DatasetError, FluxStoreError
from zjulab.fluxmem.locomo import load_locomo
from zjulab.fluxmem.migrate import migrate_jsonl_store

BAD = json.loads('"a\\ud800b"')  # what json.loads gives for an escaped half pair


def _snapshot(mem: FluxMemory) -> tuple:
    c = mem.store.conn
    return tuple(
        c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("nodes", "edges", "history", "trajectories")
    )


CALLS = {
    "messages[0].content": lambda m, i: m.add(BAD, user_id="u"),
    "messages[1].content": lambda m, i: m.add(["fine", {"role": "user", "content": BAD}], user_id="u"),
    "messages[0].name": lambda m, i: m.add([{"role": "user", "name": BAD, "content": "x"}], user_id="u"),
    "messages[0].role": lambda m, i: m.add([{"role": BAD, "content": "x"}], user_id="u"),
    "messages[0].timestamp": lambda m, i: m.add(
        [{"role": "user", "content": "x", "timestamp": BAD}], user_id="u"
    ),
    "metadata['k']": lambda m, i: m.add("x", user_id="u", metadata={"k": BAD}),
    "metadata['k'][1]": lambda m, i: m.add("x", user_id="u", metadata={"k": ["ok", BAD]}),
    "metadata key": lambda m, i: m.add("x", user_id="u", metadata={BAD: 1}),
    "messages[0].metadata['k']": lambda m, i: m.add(
        [{"role": "user", "content": "x", "metadata": {"k": BAD}}], user_id="u"
    ),
    "user_id": lambda m, i: m.add("x", user_id=BAD),
    "agent_id": lambda m, i: m.search("x", agent_id=BAD),
    "run_id": lambda m, i: m.get_all(user_id="u", run_id=BAD),
    "query": lambda m, i: m.search(BAD, user_id="u"),
    "filters['speaker']": lambda m, i: m.search("hello", user_id="u", filters={"speaker": [BAD]}),
    "text": lambda m, i: m.update(i, BAD),
    "metadata['m']": lambda m, i: m.update(i, metadata={"m": BAD}),
    "memory_id": lambda m, i: m.get(BAD),
    "memory_id ": lambda m, i: m.delete(BAD),
    "memory_id  ": lambda m, i: m.history(BAD),
    "query ": lambda m, i: m.feedback(BAD, "failure", user_id="u"),
    "reason": lambda m, i: m.feedback("q", "failure", user_id="u", reason=BAD),
    "evidence[0]": lambda m, i: m.feedback("q", "failure", [BAD], user_id="u"),
    "user_id ": lambda m, i: m.delete_all(user_id=BAD),
    "run_id ": lambda m, i: m.consolidate(run_id=BAD),
    "user_id  ": lambda m, i: m.trajectories(user_id=BAD),
}


@pytest.mark.parametrize("field", sorted(CALLS))
def test_every_python_entry_point_refuses_a_lone_surrogate(enc, tmp_path, field):
    mem = FluxMemory.open(tmp_path / "s", enc)
    mid = mem.add("hello world", user_id="u", metadata={"m": 1})["results"][0]["id"]
    before = _snapshot(mem)
    with pytest.raises(MemoryInputError) as err:
        CALLS[field](mem, mid)
    msg = str(err.value)
    assert msg.startswith(field.strip()) and "lone surrogate" in msg, msg
    if field.strip() in ("user_id", "agent_id", "run_id"):
        assert isinstance(err.value, ScopeError)
    msg.encode("utf-8")  # the message itself can be printed and sent
    assert _snapshot(mem) == before
    mem.close()
    again = FluxMemory.open(tmp_path / "s", enc)
    assert [(r["memory"], r["metadata"]) for r in again.get_all(user_id="u")["results"]] == [
        ("hello world", {"m": 1})
    ]


def test_a_store_path_sqlite_cannot_open_is_refused_before_any_directory_is_made(enc, tmp_path):
    bad = tmp_path / "st\udcffore"  # a non-UTF-8 name as decoded with surrogateescape
    with pytest.raises(MemoryInputError, match="store path"):
        FluxMemory.open(bad, enc)
    assert list(tmp_path.iterdir()) == []
    mem = FluxMemory(enc)
    mem.add("x", user_id="u")
    with pytest.raises(MemoryInputError, match="save path"):
        mem.save(bad)
    assert list(tmp_path.iterdir()) == []


def test_a_chat_answer_with_a_lone_surrogate_takes_the_non_llm_path(enc):
    reply = '{"facts": [{"text": "Ana lives in \\ud800 Lisbon", "sources": [0]}]}'
    mem = FluxMemory(enc, ScriptedChatModel(default=reply), FluxMemConfig(verify_links=False))
    res = mem.add(["Ana: I moved to Lisbon"], user_id="ana")
    assert [r["kind"] for r in res["results"]] == ["episodic"]  # the fact is not written
    assert mem.reasoner.failures == 1


def test_locomo_file_with_a_lone_surrogate_names_the_conversation(tiny_locomo_file):
    data = json.loads(tiny_locomo_file.read_text())
    data[0]["conversation"]["session_2"][1]["text"] = BAD
    tiny_locomo_file.write_text(json.dumps(data))  # ensure_ascii writes the escape
    with pytest.raises(DatasetError, match=r"conversation 0\['conversation'\]\['session_2'\]\[1\]\['text'\]"):
        load_locomo(tiny_locomo_file)


def test_migrating_a_row_with_a_lone_surrogate_names_the_file_and_row(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": "zjulab-fluxmem-store", "version": 1, "dim": 4}))
    node = {"id": "n1", "kind": "episodic", "content": BAD, "user_id": "u"}
    (old / "nodes.jsonl").write_text(json.dumps(node) + "\n")
    for name in ("edges", "history", "trajectories"):
        (old / f"{name}.jsonl").write_text("")
    import numpy as np

    np.save(old / "embeddings.npy", np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(FluxStoreError, match=r"nodes.jsonl row 1\['content'\]"):
        migrate_jsonl_store(old, tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("cmd", [["inspect"], ["serve", "--encoder", "hashing"]])
def test_cli_refuses_a_store_path_sqlite_cannot_open(tmp_path, cmd):
    bad = bytes(tmp_path) + b"/st\xffore"
    out = subprocess.run(
        [sys.executable, "-m", "zjulab.fluxmem.cli", cmd[0], bad, *cmd[1:]],
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert b"error: store: character" in out.stderr and b"surrogate" in out.stderr
    assert b"Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []
