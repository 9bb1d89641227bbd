from __future__ import annotations

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.hiesql.demo_db import DEMO_QUESTIONS, build_demo_database
from zjulab.hiesql.errors import HieSqlConfigError
from zjulab.hiesql.llm_parser import LLMParser
from zjulab.hiesql.reranking import rerank_candidates
from zjulab.hiesql.schema import schema_from_sqlite
from zjulab.hiesql.session import Text2SQLSession
from zjulab.hiesql.validity import check_sql, extract_sql


def test_validity_guard(concert_schema):
    assert check_sql('SELECT T1.name FROM singer AS T1 WHERE T1.country = "France"', concert_schema)
    assert check_sql("SELECT nam FROM singer", concert_schema).reason == "unknown column 'nam'"
    assert check_sql("DELETE FROM singer", concert_schema).reason == "not a query: Delete"
    assert not check_sql("SELECT name FROM singers", concert_schema)
    assert extract_sql("Sure!\n```sql\nSELECT name\nFROM singer;\n```") == "SELECT name FROM singer"
    assert extract_sql("The answer is SELECT age FROM singer\n\nThanks") == "SELECT age FROM singer"


def test_rerank_prefers_first_valid_then_executable(concert_schema, concert_db):
    cands = [
        ("SELECT nope FROM singer", -0.1),
        ("SELECT age FROM singer WHERE x", -0.2),
        ("SELECT name FROM singer", -0.5),
    ]
    p = rerank_candidates(cands, concert_schema)
    assert (
        p.sql == "SELECT name FROM singer"
        and p.valid
        and [r[0] for r in p.rejected] == [c[0] for c in cands[:2]]
    )
    p2 = rerank_candidates([("SELECT nope FROM singer", 0.0)], concert_schema)
    assert p2.sql == "SELECT nope FROM singer" and not p2.valid


def test_session_carries_history_and_last_sql(concert_db):
    replies = ["```sql\nSELECT name FROM singer\n```", "SELECT name FROM singer WHERE country = 'France'"]
    chat = ScriptedChatModel(replies)
    session = Text2SQLSession(LLMParser(chat), concert_db)
    first = session.ask("Show the singer names")
    second = session.ask("Only those from France?")
    assert first.result.rows == [("Ana",), ("Bo",), ("Cy",)]
    assert second.result.rows == [("Ana",), ("Cy",)]
    prompt2 = (
        chat.calls[1][0][-1]["content"]
        if isinstance(chat.calls[1][0], list) and isinstance(chat.calls[1][0][0], list)
        else None
    )
    text = str(chat.calls[1])
    assert "earlier questions: Show the singer names" in text
    assert "previous SQL: SELECT name FROM singer" in text
    assert "CREATE TABLE singer (  -- mentioned" in text  # the linked table is marked
    assert prompt2 is None or "question: Only those from France?" in prompt2
    assert session.last_sql == "SELECT name FROM singer WHERE country = 'France'"
    session.reset()
    assert session.history == [] and session.last_sql is None


def test_invalid_sql_not_executed(concert_db):
    session = Text2SQLSession(LLMParser(ScriptedChatModel(["DROP TABLE singer"])), concert_db)
    turn = session.ask("delete everything")
    assert turn.result is None and "no valid candidate" in turn.error
    with pytest.raises(HieSqlConfigError, match="db_path or a schema"):
        Text2SQLSession(LLMParser(ScriptedChatModel([])))
    with pytest.raises(HieSqlConfigError, match="num_candidates"):
        LLMParser(ScriptedChatModel([]), num_candidates=0)


def test_demo_database(tmp_path):
    db = build_demo_database(tmp_path / "d" / "bookshop.sqlite")
    s = schema_from_sqlite(db)
    assert s.table_names_original == ("author", "book", "sale")
    assert [s.qualified_column(a) + "->" + s.qualified_column(b) for a, b in s.foreign_keys] == [
        "book.author_id->author.author_id",
        "sale.book_id->book.book_id",
    ]
    assert len(DEMO_QUESTIONS) == 3


def test_linking_repair_only_with_exact_or_value_links(tmp_path):
    from zjulab.hiesql.linking import build_linking_graph
    from zjulab.hiesql.reranking import repair_with_linking

    db = build_demo_database(tmp_path / "b.sqlite")
    s = schema_from_sqlite(db)
    g = build_linking_graph(s, "List the names of all authors.", [], None, db)
    assert repair_with_linking("SELECT author FROM author", s, g) == "SELECT name FROM author"
    assert not rerank_candidates([("SELECT author FROM author", -1.0)], s, db, g).valid  # opt-in only
    p = rerank_candidates([("SELECT author FROM author", -1.0)], s, db, g, repair=True)
    assert p.valid and p.sql == "SELECT name FROM author" and "repaired" in p.rejected[-1][1]
    g3 = build_linking_graph(s, "What are the titles of the books written by them?", ["x"], None, db)
    # "country" is not a book column and nothing unused in book is linked exactly: no repair
    assert repair_with_linking("SELECT title FROM book WHERE country = 'Canada'", s, g3) is None


# --------------------------------------------------------------------------------------------
# the session: last_sql, one sandbox config, failures, bounded memory
# --------------------------------------------------------------------------------------------
class _CountingSandboxParser:
    """Wraps an LLMParser and records the sandbox it was handed."""

    def __init__(self, inner):
        self.inner = inner
        self.sandboxes = []

    def predict_turn(self, schema, utterance, history=(), last_sql=None, db_path=None, sandbox=None):
        self.sandboxes.append(sandbox)
        return self.inner.predict_turn(schema, utterance, history, last_sql, db_path, sandbox=sandbox)


def test_last_sql_only_from_valid_executed_sql(concert_db):
    chat = ScriptedChatModel(
        [
            "```sql\nSELECT name FROM singer\n```",
            "I'm sorry, I cannot answer that.",  # no SQL: the turn fails
            "SELECT nope FROM singer",  # unknown column: fails the guard
            "SELECT name FROM singer WHERE country = 'France'",
        ]
    )
    session = Text2SQLSession(LLMParser(chat), concert_db)
    assert session.ask("Show the singer names").ok
    apology = session.ask("And their fans?")
    assert not apology.ok and apology.result is None and "no valid candidate" in apology.error
    assert session.last_sql == "SELECT name FROM singer"
    assert not session.ask("Their nope?").ok
    assert session.last_sql == "SELECT name FROM singer"
    session.ask("Only those from France?")
    assert "previous SQL: SELECT name FROM singer\n" in chat.calls[3][-1]["content"]
    last_user = chat.calls[3][-1]["content"]
    assert "sorry" not in str(chat.calls[3])
    assert [ln for ln in last_user.splitlines() if ln.startswith("previous SQL")] == [
        "previous SQL: SELECT name FROM singer"
    ]
    assert session.last_sql == "SELECT name FROM singer WHERE country = 'France'"


def test_one_sandbox_config_governs_every_execution(concert_db, monkeypatch):
    from zjulab.hiesql.config import SandboxConfig
    from zjulab.hiesql.sandbox import SQLiteSandbox

    calls = []
    real = SQLiteSandbox.execute

    def spy(self, sql, max_rows=None, **kw):
        calls.append((id(self), self.config.timeout_s, sql))
        return real(self, sql, max_rows, **kw)

    monkeypatch.setattr(SQLiteSandbox, "execute", spy)
    chat = ScriptedChatModel(["SELECT name FROM singer ORDER BY name"])
    parser = _CountingSandboxParser(LLMParser(chat))
    session = Text2SQLSession(parser, concert_db, sandbox_config=SandboxConfig(timeout_s=60))
    turn = session.ask("Names?")
    assert turn.result.rows == [("Ana",), ("Bo",), ("Cy",)]
    assert parser.sandboxes == [session.sandbox]
    # the schema, the values for linking and the candidate are all read through the session's
    # sandbox at its 60 s limit; the candidate runs once
    assert {c[:2] for c in calls} == {(id(session.sandbox), 60)}
    assert [c[2] for c in calls].count("SELECT name FROM singer ORDER BY name") == 1
    assert any("pragma_table_info" in c[2] for c in calls)  # the schema
    assert any(c[2].startswith('SELECT DISTINCT "name" FROM "singer"') for c in calls)  # values


def test_failed_model_call_is_a_failed_turn_not_a_dead_session(concert_db):
    from zjulab.common.chat import ChatResult
    from zjulab.common.errors import RemoteModelError

    chat = ScriptedChatModel(
        [ChatResult(error=RemoteModelError("http://x: HTTP 500")), "SELECT name FROM singer WHERE age > 40"]
    )
    session = Text2SQLSession(LLMParser(chat), concert_db)
    bad = session.ask("Names?")
    assert not bad.ok and "HTTP 500" in bad.error and bad.result is None
    good = session.ask("Older than 40?")
    assert good.ok and good.result.rows == [("Bo",)]
    assert session.history == ["Names?", "Older than 40?"]


def test_cut_off_answer_is_refused(concert_db):
    from zjulab.common.chat import ChatResult

    chat = ScriptedChatModel([ChatResult("SELECT name FROM singer WHERE age > 4", finish_reason="length")])
    pred = LLMParser(chat).predict_turn(schema_from_sqlite(concert_db), "Older than 40?", db_path=concert_db)
    assert not pred.valid and "cut off" in pred.rejected[0][1]


def test_greedy_first_samples_only_when_it_fails(concert_db):
    schema = schema_from_sqlite(concert_db)
    chat = ScriptedChatModel(["SELECT name FROM singer", "SELECT age FROM singer"])
    pred = LLMParser(chat, num_candidates=3).predict_turn(schema, "Names?", db_path=concert_db)
    assert pred.sql == "SELECT name FROM singer" and len(chat.calls) == 1
    chat2 = ScriptedChatModel(["SELECT nope FROM singer", "SELECT name FROM singr", "SELECT age FROM singer"])
    pred2 = LLMParser(chat2, num_candidates=3).predict_turn(schema, "Ages?", db_path=concert_db)
    assert pred2.sql == "SELECT age FROM singer" and len(chat2.calls) == 3
    assert [s["temperature"] for s in chat2.sampling] == [0.0, 0.7, 0.7]
    assert [r[0] for r in pred2.rejected] == ["SELECT nope FROM singer", "SELECT name FROM singr"]


def test_execution_guided_dropping(concert_db):
    schema = schema_from_sqlite(concert_db)
    cands = [
        ("SELECT name FROM singer WHERE age > (SELECT age FROM singer)", 0.0),  # fine for sqlglot
        (
            "SELECT name FROM singer WHERE json_extract(name, '$.a') = 1",
            0.0,
        ),  # passes sqlglot, errors in SQLite
        ("SELECT fts3_tokenizer('simple') FROM singer", 0.0),  # refused by the sandbox
        ("SELECT name FROM singer WHERE age > 40", 0.0),
    ]
    p = rerank_candidates(cands[1:], schema, concert_db)
    assert p.sql == "SELECT name FROM singer WHERE age > 40" and p.result.rows == [("Bo",)]
    assert [why.split(":")[0] for _c, why in p.rejected] == ["execution", "execution"]
    assert rerank_candidates(cands[1:], schema).sql == cands[1][0]  # no database: sqlglot alone


def test_session_memory_is_bounded(concert_db):
    big = (
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 900) "
        "SELECT printf('%.200c', 'x') FROM r"
    )
    chat = ScriptedChatModel(default=big)
    session = Text2SQLSession(LLMParser(chat), concert_db, keep_results=2)
    for k in range(5):
        turn = session.ask(f"Big {k}?")
        assert turn.ok and len(turn.result.rows) == 900
    kept = [t.result is not None for t in session.turns]
    assert kept == [False, False, False, True, True]
    assert all(t.results_dropped for t in session.turns[:3])
    assert all(t.prediction.result is None for t in session.turns[:3])


def test_pruned_schema_prompt_exact_strings(concert_db):
    from zjulab.hiesql.linking import build_linking_graph
    from zjulab.hiesql.prompting import build_llm_conversation, count_tokens, pruned_schema_ddl

    s = schema_from_sqlite(concert_db)
    g = build_linking_graph(s, "Which stadiums had concerts in 2014?", [], None, concert_db)
    full = pruned_schema_ddl(s, g)
    assert full == (
        "CREATE TABLE concert (  -- mentioned\n"
        "  concert_id number primary key,  -- mentioned\n"
        "  singer_id number references singer(singer_id),\n"
        "  year number,\n"
        "  stadium text  -- mentioned\n"
        ");\n"
        "CREATE TABLE singer (\n"
        "  singer_id number primary key,\n"
        "  name text,\n"
        "  country text,\n"
        "  age number\n"
        ");"
    )  # the linked table first, though it comes second in the schema
    assert count_tokens(full) == 52
    assert pruned_schema_ddl(s, g, budget=30) == (
        "CREATE TABLE concert (  -- mentioned\n"
        "  concert_id number primary key,  -- mentioned\n"
        "  singer_id number,\n"
        "  year number,\n"
        "  stadium text  -- mentioned\n"
        ");"
    )
    g2 = build_linking_graph(s, "Singers from France?", [], None, concert_db)
    assert pruned_schema_ddl(s, g2, budget=30) == (
        "CREATE TABLE singer (  -- mentioned\n"
        "  singer_id number primary key,  -- mentioned\n"
        "  country text  -- mentioned, matches 'france'\n"
        ");"
    )
    # a linked column that does not fit is never displaced by lower-ranked ones (name, age)
    assert pruned_schema_ddl(s, g2, budget=24) == (
        "CREATE TABLE singer (  -- mentioned\n  singer_id number primary key  -- mentioned\n);"
    )
    conv = build_llm_conversation(s, "Singers from France?", [], None, g2, schema_budget=30)
    assert conv[0]["content"].endswith("-- mentioned, matches 'france'\n);")
    assert "CREATE TABLE concert" not in conv[0]["content"]
