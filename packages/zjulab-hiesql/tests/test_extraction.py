"""extract_sql on realistic chat answers, and check_sql's scope resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zjulab.hiesql.demo_db import build_demo_database
from zjulab.hiesql.sandbox import SQLiteSandbox
from zjulab.hiesql.schema import schema_from_sqlite
from zjulab.hiesql.validity import check_sql, extract_sql, extract_sql_answer

ANSWERS = json.loads((Path(__file__).parent / "data" / "chat_answers.json").read_text(encoding="utf-8"))


def test_corpus_is_large_enough():
    assert len(ANSWERS) >= 30
    assert sum(1 for a in ANSWERS if not a["sql"]) >= 8  # answers that must be refused


@pytest.mark.parametrize("case", ANSWERS, ids=[a["note"] for a in ANSWERS])
def test_realistic_answers(case):
    got = extract_sql_answer(case["answer"])
    assert got.sql == case["sql"]
    assert bool(got.reason) == (not case["sql"])


@pytest.fixture
def bookshop(tmp_path):
    db = build_demo_database(tmp_path / "bookshop.sqlite")
    return db, schema_from_sqlite(db)


def test_comment_never_swallows_the_where(bookshop):
    db, _schema = bookshop
    sql = extract_sql("SELECT name FROM author -- authors\nWHERE country = 'Canada'")
    rows = SQLiteSandbox(db).execute(sql).rows
    everyone = SQLiteSandbox(db).execute("SELECT name FROM author").rows
    assert len(rows) == 2 and len(everyone) == 5  # the old extractor ran it without the WHERE


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT title FROM book WHERE country = 'Canada'", "unknown column 'country'"),
        (
            "SELECT title FROM book AS b JOIN sale AS s ON b.book_id = s.book_id WHERE name = 'x'",
            "unknown column 'name'",
        ),
        (
            "SELECT name FROM author WHERE author_id IN (SELECT author_id FROM book WHERE quantity > 1)",
            "unknown column 'quantity'",
        ),
        ("SELECT T1.title FROM book AS T1 WHERE T2.name = 'x'", "unknown table or alias 'T2'"),
        ("SELECT a.title FROM author AS a", "unknown column a.title"),
    ],
)
def test_columns_resolve_against_their_own_scope(bookshop, sql, reason):
    _db, schema = bookshop
    assert check_sql(sql, schema).reason == reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT title FROM book WHERE author_id IN (SELECT author_id FROM author WHERE country = 'Canada')",
        # correlated: the inner SELECT reads the outer book's column
        "SELECT title FROM book AS b WHERE EXISTS (SELECT 1 FROM sale WHERE sale.book_id = b.book_id AND quantity > price)",
        "SELECT title FROM book WHERE price > (SELECT avg(price) FROM book)",
        "SELECT genre, count(*) AS n FROM book GROUP BY genre ORDER BY n DESC",
        "SELECT t.title FROM (SELECT title, price FROM book) AS t WHERE t.price > 3",
        "WITH c AS (SELECT author_id FROM author WHERE country = 'Canada') SELECT title FROM book WHERE author_id IN (SELECT author_id FROM c)",
        "SELECT name FROM author UNION SELECT title FROM book",
        'SELECT name FROM author WHERE country = "Canada"',
    ],
)
def test_valid_queries_pass(bookshop, sql):
    _db, schema = bookshop
    assert check_sql(sql, schema), check_sql(sql, schema).reason
