from __future__ import annotations

import time

import pytest

from zjulab.hiesql.config import SandboxConfig
from zjulab.hiesql.errors import (
    HieSqlConfigError,
    SandboxError,
    SandboxLimitError,
    SandboxPermissionError,
    SchemaFileError,
)
from zjulab.hiesql.sandbox import SQLiteSandbox


def test_reads_rows(concert_db):
    with SQLiteSandbox(concert_db) as box:
        res = box.execute("SELECT name FROM singer WHERE country = 'France' ORDER BY name")
    assert res.rows == [("Ana",), ("Cy",)] and res.columns == ("name",) and not res.truncated


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO singer VALUES (9, 'X', 'Y', 1)",
        "UPDATE singer SET age = 1",
        "DELETE FROM singer",
        "DROP TABLE singer",
        "CREATE TABLE t (a)",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 3",
        "SELECT load_extension('x')",
        "BEGIN",
    ],
)
def test_refuses_writes_and_escapes(concert_db, sql):
    with SQLiteSandbox(concert_db) as box:
        with pytest.raises(SandboxPermissionError, match="sandbox refused"):
            box.execute(sql)
        assert box.execute("SELECT count(*) FROM singer").rows == [(3,)]


def test_read_only_pragma_allowed(concert_db):
    with SQLiteSandbox(concert_db) as box:
        cols = [r[1] for r in box.execute("PRAGMA table_info(singer)").rows]
    assert cols == ["singer_id", "name", "country", "age"]


def test_two_statements_refused(concert_db):
    with SQLiteSandbox(concert_db) as box, pytest.raises(SandboxPermissionError, match="one statement"):
        box.execute("SELECT 1; SELECT 2")


def test_runaway_recursive_cte_stopped(concert_db):
    box = SQLiteSandbox(concert_db, SandboxConfig(timeout_s=0.3))
    start = time.monotonic()
    with pytest.raises(SandboxLimitError, match="time limit"):
        box.execute("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r")
    assert time.monotonic() - start < 3.0
    assert box.execute("SELECT 1").rows == [(1,)]  # usable afterwards


def test_row_and_size_caps(concert_db):
    many = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 50) SELECT x FROM r"
    res = SQLiteSandbox(concert_db, SandboxConfig(max_rows=10)).execute(many)
    assert len(res.rows) == 10 and res.truncated and res.rows[-1] == (10,)
    with pytest.raises(SandboxLimitError, match="more than 10 rows"):
        SQLiteSandbox(concert_db, SandboxConfig(max_rows=10, on_row_limit="raise")).execute(many)
    with pytest.raises(SandboxLimitError, match="bytes"):
        SQLiteSandbox(concert_db, SandboxConfig(max_bytes=1000)).execute(
            "SELECT printf('%.*c', 600, 'x') FROM singer"
        )


def test_errors(concert_db, tmp_path):
    with pytest.raises(SandboxError, match="no such column"):
        SQLiteSandbox(concert_db).execute("SELECT nope FROM singer")
    with pytest.raises(SchemaFileError, match="not found"):
        SQLiteSandbox(tmp_path / "missing.sqlite")
    with pytest.raises(HieSqlConfigError, match="timeout_s"):
        SandboxConfig(timeout_s=0)
