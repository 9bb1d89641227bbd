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
    p = rerank_candidates([("SELECT author FROM author", -1.0)], s, db, g)
    assert p.valid and p.sql == "SELECT name FROM author" and "repaired" in p.rejected[-1][1]
    g3 = build_linking_graph(s, "What are the titles of the books written by them?", ["x"], None, db)
    # "country" is not a book column and nothing unused in book is linked exactly: no repair
    assert repair_with_linking("SELECT title FROM book WHERE country = 'Canada'", s, g3) is None
