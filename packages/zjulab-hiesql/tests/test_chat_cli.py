"""`zjulab-hiesql chat` over an OpenAI-compatible server that fails: the session goes on."""

from __future__ import annotations

import io
import time

from zjulab.common.testing import ChatServer, ScriptedChatModel
from zjulab.hiesql.cli import main


def _chat(monkeypatch, capsys, db, server, questions, *extra):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(questions) + "\n"))
    rc = main(["chat", str(db), "--base-url", server.url, "--llm", "scripted", "--candidates", "1", *extra])
    return rc, capsys.readouterr().out


def test_http_500_and_malformed_body_fail_one_turn_each(monkeypatch, capsys, concert_db):
    model = ScriptedChatModel(default="SELECT name FROM singer WHERE age > 40")
    with ChatServer(model, models=["scripted"]) as server:
        server.fail_next(1, 500)
        server.fail_next(1, 200, body=b'{"choices": [')
        rc, out = _chat(
            monkeypatch, capsys, concert_db, server, ["Old?", "Old again?", "Still old?"], "--retries", "0"
        )
    assert rc == 0
    turns = out.split("[turn ")[1:]
    assert len(turns) == 3
    assert "failed:" in turns[0] and "500" in turns[0]
    assert "failed:" in turns[1] and "malformed" in turns[1]
    assert "rows (1): name" in turns[2] and "Bo" in turns[2]


def test_silent_endpoint_is_bounded_by_timeout(monkeypatch, capsys, concert_db):
    model = ScriptedChatModel(default="SELECT name FROM singer")
    with ChatServer(model, models=["scripted"]) as server:
        server.fail_next(1, 200, delay=6)
        start = time.monotonic()
        rc, out = _chat(
            monkeypatch,
            capsys,
            concert_db,
            server,
            ["Names?", "Names again?"],
            "--timeout",
            "1",
            "--retries",
            "0",
        )
        elapsed = time.monotonic() - start
    assert rc == 0 and elapsed < 5  # not the 6 s the server stays silent
    turns = out.split("[turn ")[1:]
    assert "failed:" in turns[0] and "timed out" in turns[0]
    assert "rows (3): name" in turns[1]


def test_retries_recover_a_transient_500(monkeypatch, capsys, concert_db):
    model = ScriptedChatModel(default="SELECT name FROM singer WHERE age > 40")
    with ChatServer(model, models=["scripted"]) as server:
        server.fail_next(1, 500)
        rc, out = _chat(monkeypatch, capsys, concert_db, server, ["Old?"], "--retries", "2")
    assert rc == 0 and "rows (1): name" in out and "failed:" not in out


def test_demo_prints_the_result_rows_of_each_turn(monkeypatch, capsys):
    # the demo's mechanics with a model that writes the right SQL: rows hand-read from
    # resources/bookshop.sql (Canada: Chloe Martin, Elena Petrova; their four books)
    from zjulab.hiesql import cli
    from zjulab.hiesql.llm_parser import LLMParser

    model = ScriptedChatModel(
        [
            "```sql\nSELECT name FROM author ORDER BY name\n```",
            "```sql\nSELECT name FROM author WHERE country = 'Canada' ORDER BY name\n```",
            "```sql\nSELECT T2.title FROM author AS T1 JOIN book AS T2 ON T1.author_id = T2.author_id "
            "WHERE T1.country = 'Canada' ORDER BY T2.title\n```",
        ]
    )
    monkeypatch.setattr(cli, "_llm_parser", lambda args, examples=None: LLMParser(model, num_candidates=1))
    assert main(["demo"]) == 0
    turns = capsys.readouterr().out.split("[turn ")[1:]
    rows = [
        [line.strip() for line in t.split("rows (", 1)[1].splitlines()[1:] if line.startswith("    ")]
        for t in turns
    ]
    assert [t.split("rows (", 1)[1].split(")")[0] for t in turns] == ["5", "2", "4"]
    assert rows == [
        ["Ada Lindqvist", "Bruno Alves", "Chloe Martin", "Dev Raman", "Elena Petrova"],
        ["Chloe Martin", "Elena Petrova"],
        ["Maple and Stone", "Quiet Machines", "Small Hours", "Winter Atlas"],
    ]
    assert "country" in turns[1].split("linked schema:")[1].split("SQL:")[0]  # 'Canada' linked by value
