from __future__ import annotations

import sqlite3
import subprocess
import sys
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
from zjulab.hiesql.sandbox import SQLiteSandbox, row_bytes
from zjulab.hiesql.schema import schema_from_sqlite


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
        # functions outside the allow-list: fts3_tokenizer() installs a tokenizer from a raw
        # pointer (a crafted blob crashes the process) and leaks an address in its 1-arg form
        "SELECT fts3_tokenizer('simple', x'4141414141414141')",
        "SELECT hex(fts3_tokenizer('simple'))",
        "SELECT name FROM singer WHERE fts3_tokenizer('porter') IS NOT NULL",
        "SELECT randomblob(100)",
        "SELECT sqlite_compileoption_get(0)",
        "SELECT zeroblob(10)",
        "PRAGMA writable_schema = 1",
        "PRAGMA trusted_schema = 1",
        "CREATE VIRTUAL TABLE t USING fts4(body)",
        "CREATE TRIGGER t AFTER INSERT ON singer BEGIN SELECT 1; END",
        "CREATE TEMP VIEW v AS SELECT 1",
        "SAVEPOINT a",
        "ANALYZE",
        "VACUUM INTO '/tmp/copy.sqlite'",
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
    wide = "SELECT printf('%.*c', 600, 'x') FROM singer"
    res = SQLiteSandbox(concert_db, SandboxConfig(max_bytes=1500)).execute(wide)
    assert res.truncated and len(res.rows) == 2 and res.nbytes <= 1500
    with pytest.raises(SandboxLimitError, match="bytes"):
        SQLiteSandbox(concert_db, SandboxConfig(max_bytes=1000, on_row_limit="raise")).execute(wide)


def test_errors(concert_db, tmp_path):
    with pytest.raises(SandboxError, match="no such column"):
        SQLiteSandbox(concert_db).execute("SELECT nope FROM singer")
    with pytest.raises(SchemaFileError, match="not found"):
        SQLiteSandbox(tmp_path / "missing.sqlite")
    with pytest.raises(HieSqlConfigError, match="timeout_s"):
        SandboxConfig(timeout_s=0)


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("DELETE FROM singer", "DELETE singer"),
        ("CREATE TRIGGER t AFTER INSERT ON singer BEGIN SELECT 1; END", "CREATE_TRIGGER t"),
        ("INSERT INTO singer VALUES (9, 'X', 'Y', 1)", "INSERT singer"),
        ("DROP TABLE singer", "DELETE sqlite_master"),  # SQLite asks this first
        ("ATTACH DATABASE ':memory:' AS other", "ATTACH :memory:"),
        ("PRAGMA user_version = 3", "PRAGMA user_version"),
        ("SELECT fts3_tokenizer('simple')", "function fts3_tokenizer()"),
    ],
)
def test_refusal_names_the_action(concert_db, sql, named):
    # the old map was built from every sqlite3.SQLITE_* int and collided with SQLITE_LIMIT_*
    with SQLiteSandbox(concert_db) as box, pytest.raises(SandboxPermissionError) as err:
        box.execute(sql)
    assert f"sandbox refused {named!r}" in str(err.value)
    assert "LIMIT_" not in str(err.value)


def test_allowed_functions_still_work(concert_db):
    sql = (
        "SELECT upper(name), length(country), round(avg(age), 1), group_concat(name), "
        "strftime('%Y', '2014-05-01'), abs(-2), coalesce(NULL, 1), count(*) FROM singer "
        "WHERE name LIKE 'A%' GROUP BY name"
    )
    assert SQLiteSandbox(concert_db).execute(sql).rows == [("ANA", 6, 30.0, "Ana", "2014", 2, 1, 1)]
    extra = SQLiteSandbox(concert_db, SandboxConfig(extra_functions=("randomblob",)))
    assert len(extra.execute("SELECT randomblob(4)").rows[0][0]) == 4


def test_hardened_connection_refuses_tokenizer_even_without_authorizer(concert_db):
    from zjulab.hiesql._sqlite import open_readonly

    conn = open_readonly(concert_db)
    try:
        with pytest.raises(sqlite3.OperationalError, match="fts3tokenize disabled"):
            conn.execute("SELECT fts3_tokenizer('simple', x'4141414141414141')").fetchall()
        with pytest.raises(sqlite3.OperationalError, match="not authorized"):
            conn.execute("SELECT load_extension('x')").fetchall()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE t (a)")
    finally:
        conn.close()


def test_fts4_match_after_tokenizer_attempt_does_not_crash(tmp_path):
    # the crash reproduction runs in a child: a regression must fail the test, not kill pytest
    db = tmp_path / "docs.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE VIRTUAL TABLE doc USING fts4(body)")
    conn.execute("INSERT INTO doc VALUES ('hello world')")
    conn.commit()
    conn.close()
    script = f"""
import sys
from zjulab.hiesql import SQLiteSandbox, SandboxConfig
from zjulab.hiesql.errors import SandboxError
box = SQLiteSandbox({str(db)!r}, SandboxConfig(extra_functions=("match",)))
for sql in ("SELECT fts3_tokenizer('simple', x'4141414141414141')",
            "SELECT body FROM doc WHERE body MATCH 'hello'"):
    try:
        box.execute(sql)
        print("ran")
    except SandboxError as exc:
        print(type(exc).__name__)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr  # -11 (SIGSEGV) before the fix
    assert out.stdout.split()[0] == "SandboxPermissionError"
    assert len(out.stdout.split()) == 2


@pytest.mark.parametrize("name", ["shop#1.sqlite", "a?b.sqlite", "50%.sqlite", "with space.sqlite"])
def test_special_characters_in_path(tmp_path, name):
    db = tmp_path / name
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE product (pid INTEGER PRIMARY KEY, title TEXT)")
    conn.execute("INSERT INTO product VALUES (1, 'pen')")
    conn.commit()
    conn.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert SQLiteSandbox(db).execute("SELECT title FROM product").rows == [("pen",)]
    schema = schema_from_sqlite(db)
    assert schema.table_names_original == ("product",)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no "shop" file created next to it


def test_memory_cap_counts_python_objects(concert_db):
    # 400 rows of a 1-char string: ~20 kB of str objects (the old count said 400 bytes)
    sql = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 400) SELECT 'a' FROM r"
    res = SQLiteSandbox(concert_db, SandboxConfig(max_bytes=10_000)).execute(sql)
    assert res.truncated and 0 < len(res.rows) < 100
    assert res.nbytes == sum(row_bytes(r) for r in res.rows) <= 10_000
    assert row_bytes(("a",)) >= sys.getsizeof("a") + sys.getsizeof(("a",))


def _big_db(tmp_path):
    db = tmp_path / "big.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x INTEGER)")
    conn.commit()
    conn.close()
    return db


#: One SQLite opcode that runs for seconds (a naive substring search over long values): the
#: progress handler never runs inside it (15 s in-process against a 1 s limit on 2 cores).
LONG_OPCODE = "SELECT instr(printf('%.*c', 900000, 'a'), printf('%.*c', 300000, 'a') || 'b')"


def test_process_isolation_bounds_a_single_long_opcode(tmp_path):
    db = _big_db(tmp_path)
    digest = db.read_bytes()
    box = SQLiteSandbox(db, SandboxConfig(isolation="process", timeout_s=1.0))
    try:
        for sql, why in (
            (LONG_OPCODE, "time limit"),
            # 1e9 repetitions inside one opcode (8.9 s before): refused before it runs
            ("SELECT printf('%.*c', 1000000000, 'x')", "value limit"),
            (
                "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 10000000) "
                "SELECT count(*) FROM r",
                "time limit",
            ),
        ):
            assert box.execute("SELECT 1").rows == [(1,)]  # (re)starts the worker outside the timing
            start = time.monotonic()
            with pytest.raises(SandboxLimitError, match=why):
                box.execute(sql)
            assert time.monotonic() - start < 1.5
        assert box.execute("SELECT count(*) FROM t").rows == [(0,)]  # a fresh worker answers
        with pytest.raises(SandboxPermissionError, match="'DELETE t'"):
            box.execute("DELETE FROM t")
        with pytest.raises(SandboxError, match="no such column"):
            box.execute("SELECT nope FROM t")
    finally:
        box.close()
    assert db.read_bytes() == digest


def test_default_sandbox_is_hard_bounded(tmp_path):
    # the default configuration (process isolation) ends a single long opcode at the deadline
    db = _big_db(tmp_path)
    assert SandboxConfig().isolation == "process"
    with SQLiteSandbox(db, SandboxConfig(timeout_s=1.0)) as box:
        box.execute("SELECT 1")
        start = time.monotonic()
        with pytest.raises(SandboxLimitError, match="time limit"):
            box.execute(LONG_OPCODE)
        assert time.monotonic() - start < 1.5
        assert box.execute("SELECT 2").rows == [(2,)]


def test_process_isolation_memory_limit(tmp_path):
    db = _big_db(tmp_path)
    cfg = SandboxConfig(isolation="process", timeout_s=20, memory_limit_bytes=400_000_000, max_bytes=10**9)
    with SQLiteSandbox(db, cfg) as box:
        with pytest.raises(SandboxLimitError):
            box.execute(  # a 1 GB string: SQLite's malloc fails under the worker's address-space limit
                "SELECT length(group_concat(printf('%.1000000c', 'x'))) FROM (WITH RECURSIVE r(x) AS "
                "(SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 1000) SELECT x FROM r)"
            )
        assert box.execute("SELECT 2").rows == [(2,)]


@pytest.mark.parametrize("isolation", ["in_process", "process"])
def test_over_long_values_raise_instead_of_null(tmp_path, isolation):
    # SQLite's printf()/format() give NULL (no error) when the output is over the length limit:
    # substr(printf(...)) and length(printf(...)) came back as NULL, silently wrong
    db = tmp_path / "doc.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE doc (body TEXT)")
    conn.execute("INSERT INTO doc VALUES (?)", ("w" * 5000,))
    conn.commit()
    conn.close()
    cfg = SandboxConfig(max_cell_bytes=2000, isolation=isolation)
    with SQLiteSandbox(db, cfg) as box:
        for sql in (
            "SELECT printf('%.*c', 5000, 'x')",
            "SELECT substr(printf('%.*c', 5000, 'x'), 1, 5)",
            "SELECT length(format('%s%s', printf('%.*c', 1500, 'x'), printf('%.*c', 1500, 'y')))",
            "SELECT printf('%5000d', 1)",
            "SELECT body FROM doc",  # a stored value over the limit
            "SELECT body || body FROM doc WHERE 0 = 1 UNION ALL SELECT printf('%s', body) FROM doc",
        ):
            with pytest.raises(SandboxLimitError, match="limit"):
                box.execute(sql)
        # within the limit printf is SQLite's own (same answer as a plain connection)
        same = (
            "SELECT printf('%5d|%-3s|%.2f|%%|%.100000000s', 42, 'ab', 3.14159, 'abc'), "
            "printf(NULL), format('%d', 3), length(printf('%.*c', 1999, 'x')), printf('%!.3q', 'it''s'), "
            "printf('%*d|%-*d|', -4, 7, 3, 8), printf('%c%c', 'xyz'), printf('%lld', 2), printf(5)"
        )
        assert box.execute(same).rows[0][0] == "   42|ab |3.14|%|abc"
        assert box.execute(same).rows == sqlite3.connect(":memory:").execute(same).fetchall()


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("SELECT * FROM pragma_compile_options", "PRAGMA compile_options"),
        ("SELECT name FROM pragma_function_list", "PRAGMA function_list"),
        ("SELECT * FROM dbstat", "table-valued function dbstat()"),
        ("SELECT sql FROM sqlite_stmt", "table-valued function sqlite_stmt()"),
        (
            "SELECT s.name FROM singer AS s, pragma_module_list AS m",
            "table-valued function pragma_module_list()",
        ),
    ],
)
def test_table_valued_functions_refused_by_their_own_name(concert_db, sql, named):
    # these were reported as "UPDATE sqlite_master" (an internal check SQLite makes while it
    # declares the virtual table)
    with SQLiteSandbox(concert_db) as box, pytest.raises(SandboxPermissionError) as err:
        box.execute(sql)
    assert f"sandbox refused {named!r}" in str(err.value)
    assert "sqlite_master" not in str(err.value)


def test_read_only_table_valued_functions_allowed(concert_db):
    with SQLiteSandbox(concert_db) as box:
        assert box.execute("SELECT value FROM json_each('[3, 4]')").rows == [(3,), (4,)]
        assert len(box.execute("SELECT * FROM json_tree('{\"a\": [1]}')").rows) == 3
        assert [r[0] for r in box.execute("SELECT name FROM pragma_table_info('singer')").rows] == [
            "singer_id",
            "name",
            "country",
            "age",
        ]
        assert box.execute(
            "SELECT name FROM singer WHERE country IN (SELECT value FROM json_each('[\"Japan\"]'))"
        ).rows == [("Bo",)]
        for sql in ("UPDATE sqlite_master SET sql = 'x'", "UPDATE sqlite_schema SET name = 'y'"):
            with pytest.raises(SandboxPermissionError):
                box.execute(sql)
        assert box.execute("SELECT count(*) FROM singer").rows == [(3,)]


def test_statement_parameters_and_time_override(concert_db):
    with SQLiteSandbox(concert_db, SandboxConfig(isolation="process", timeout_s=30)) as box:
        assert box.execute("SELECT name FROM singer WHERE country = ?", params=("Japan",)).rows == [("Bo",)]
        box.execute("SELECT 1")
        start = time.monotonic()
        with pytest.raises(SandboxLimitError, match=r"0\.5s time limit"):
            box.execute(LONG_OPCODE, timeout_s=0.5)
        assert time.monotonic() - start < 1.0
        with pytest.raises(SandboxLimitError, match="no time left"):
            box.execute("SELECT 1", timeout_s=0)
