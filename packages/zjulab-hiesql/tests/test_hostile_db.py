"""A user's database is untrusted input: reading its schema and values never stalls or lies."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace

import pytest

from zjulab.hiesql import sandbox as sandbox_mod
from zjulab.hiesql.config import LinkingConfig, SandboxConfig
from zjulab.hiesql.errors import SandboxPermissionError, SchemaFileError
from zjulab.hiesql.linking import _VALUE_CACHE, _read_values, build_linking_graph
from zjulab.hiesql.sandbox import SQLiteSandbox
from zjulab.hiesql.schema import schema_from_sqlite


def _nested_views(path, wide: int):
    # v10 expands to 3**10 references of city: preparing one such view takes ~0.2 s, and
    # ``wide`` views on top of it make reading the schema take seconds per ten of them
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE city (name TEXT, note TEXT)")
    conn.executemany("INSERT INTO city VALUES (?, ?)", [("Lyon", "river"), ("Nice", "sea")])
    conn.execute("CREATE VIEW v0 AS SELECT name FROM city")
    for i in range(1, 11):
        conn.execute(
            f"CREATE VIEW v{i} AS SELECT name FROM v{i - 1} UNION ALL SELECT name FROM v{i - 1} "
            f"UNION ALL SELECT name FROM v{i - 1}"
        )
    for k in range(wide):
        conn.execute(f"CREATE VIEW w{k} AS SELECT name FROM v10")
    conn.commit()
    conn.close()
    return path


@pytest.mark.timeout(60)
def test_schema_of_a_slow_to_prepare_database_is_a_typed_error(tmp_path):
    db = _nested_views(tmp_path / "nested.sqlite", wide=60)  # ~12 s of preparation in all
    digest = db.read_bytes()
    with pytest.raises(SchemaFileError, match=r"nested\.sqlite: reading the schema took longer than 1s"):
        schema_from_sqlite(db, timeout_s=1.0)
    assert db.read_bytes() == digest


@pytest.mark.timeout(60)
def test_a_view_slower_than_the_statement_limit_is_left_out_with_a_warning(tmp_path, monkeypatch, caplog):
    db = _nested_views(tmp_path / "nested.sqlite", wide=2)
    # each w view takes >= 0.2 s to prepare (more under load); the cheap statements well under 0.1 s
    monkeypatch.setattr(sandbox_mod, "READ_SANDBOX", replace(sandbox_mod.READ_SANDBOX, timeout_s=0.1))
    with caplog.at_level(logging.WARNING, logger="zjulab.hiesql.schema"):
        schema = schema_from_sqlite(db, timeout_s=30.0)
    assert schema.table_names_original[0] == "city"
    assert schema.column_names_original[1:3] == ((0, "name"), (0, "note"))
    assert "w0" not in schema.table_names_original and "w1" not in schema.table_names_original
    left_out = [r.getMessage() for r in caplog.records if "left out of the schema" in r.getMessage()]
    assert any("view 'w0' left out" in m and "time limit" in m for m in left_out)


@pytest.mark.timeout(60)
def test_value_linking_never_evaluates_a_hostile_view(tmp_path, caplog, monkeypatch):
    db = _nested_views(tmp_path / "nested.sqlite", wide=2)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE VIEW endless AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) "
        "SELECT printf('v%d', x % 3) AS label FROM r"
    )
    conn.commit()
    conn.close()
    schema = schema_from_sqlite(db)
    assert "endless" in schema.table_names_original  # printf in a view reads (checked version)
    calls: list[str] = []
    real = SQLiteSandbox.execute

    def spy(self, sql, max_rows=None, **kw):
        calls.append(sql)
        return real(self, sql, max_rows, **kw)

    monkeypatch.setattr(SQLiteSandbox, "execute", spy)
    with caplog.at_level(logging.WARNING, logger="zjulab.hiesql.linking"):
        graph = build_linking_graph(schema, "Which city is Lyon?", [], None, db, LinkingConfig())
    assert "city.name" in graph.linked_schema()
    assert any(h.startswith("value_match") for h in graph.linked_schema()["city.name"])
    read = [sql for sql in calls if sql.startswith("SELECT DISTINCT")]
    assert read and all(' FROM "city" ' in sql for sql in read)  # no view is ever read
    assert not [r for r in caplog.records if "stopped" in r.getMessage()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("isolation", ["in_process", "process"])
def test_huge_value_skips_its_column_with_a_warning(tmp_path, caplog, isolation):
    db = tmp_path / "huge.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE city (name TEXT, note TEXT)")
    conn.executemany("INSERT INTO city VALUES (?, ?)", [("Lyon", "x" * 3_000_000), ("Nice", "harbour")])
    conn.commit()
    conn.close()
    schema = schema_from_sqlite(db)
    with caplog.at_level(logging.WARNING, logger="zjulab.hiesql.linking"):
        values = _read_values(db, schema, 2000, 2.0, isolation=isolation)
    # name: both values; note: over the 1 MB value limit, so the column is skipped (never cut)
    assert values == {1: {"lyon", "nice"}}
    warned = [r.getMessage() for r in caplog.records]
    assert any("skipped city.note" in m and "1000000-byte limit" in m for m in warned)


def test_value_time_budget_stops_with_a_warning(tmp_path, caplog):
    db = tmp_path / "many.sqlite"
    conn = sqlite3.connect(db)
    for t in range(5):
        conn.execute(f"CREATE TABLE t{t} (label TEXT)")
        conn.execute(f"INSERT INTO t{t} VALUES ('x{t}')")
    conn.commit()
    conn.close()
    schema = schema_from_sqlite(db)
    with caplog.at_level(logging.WARNING, logger="zjulab.hiesql.linking"):
        values = _read_values(db, schema, 2000, timeout_s=1e-6)
    assert values == {}
    assert any("value matching stopped after 1e-06s" in r.getMessage() for r in caplog.records)
    # a read cut by time is not cached: with a normal budget every table is read
    assert _read_values(db, schema, 2000, timeout_s=5.0) == {k: {f"x{k - 1}"} for k in range(1, 6)}


def test_values_are_cached_per_file_and_read_again_when_it_changes(tmp_path, monkeypatch):
    db = tmp_path / "city.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE city (name TEXT)")
    conn.execute("INSERT INTO city VALUES ('Lyon')")
    conn.commit()
    conn.close()
    schema = schema_from_sqlite(db)
    calls: list[str] = []
    real = SQLiteSandbox.execute

    def spy(self, sql, max_rows=None, **kw):
        calls.append(sql)
        return real(self, sql, max_rows, **kw)

    monkeypatch.setattr(SQLiteSandbox, "execute", spy)
    assert _read_values(db, schema, 2000) == {1: {"lyon"}}
    first = len(calls)
    assert first == 2  # the views, then city.name
    assert _read_values(db, schema, 2000) == {1: {"lyon"}}
    assert len(calls) == first  # cached: the file is not read again
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO city VALUES ('Marseille')")
    conn.commit()
    conn.close()
    assert _read_values(db, schema, 2000) == {1: {"lyon", "marseille"}}
    assert len(calls) == 2 * first
    # a file replaced by another with the same name is read again too
    db.unlink()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE city (name TEXT)")
    conn.execute("INSERT INTO city VALUES ('Nice')")
    conn.commit()
    conn.close()
    assert _read_values(db, schema, 2000) == {1: {"nice"}}
    assert any(key[0][0] == str(db.resolve()) for key in _VALUE_CACHE)


def test_views_of_the_file_keep_the_function_allow_list(tmp_path):
    # the sandbox's connection trusts the schema only so that the checked printf() works in
    # views; the allow-list and SQLite's direct-only functions still refuse inside a view
    db = tmp_path / "views.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE t (a TEXT); INSERT INTO t VALUES ('x');"
        "CREATE VIEW vp AS SELECT printf('%d-%s', 3, a) AS p FROM t;"
        "CREATE VIEW vbig AS SELECT printf('%.*c', 5000, 'y') AS p;"
        "CREATE VIEW vr AS SELECT randomblob(3) AS r;"
        "CREATE VIEW vt AS SELECT fts3_tokenizer('simple') AS q;"
        "CREATE VIEW vs AS SELECT name FROM dbstat;"
        "CREATE VIEW vl AS SELECT load_extension('x') AS r;"
        "CREATE VIEW vf AS SELECT name FROM pragma_function_list;"
    )
    conn.close()
    for isolation in ("in_process", "process"):
        with SQLiteSandbox(db, SandboxConfig(isolation=isolation, max_cell_bytes=2000)) as box:
            assert box.execute("SELECT p FROM vp").rows == [("3-x",)]
            with pytest.raises(sandbox_mod.SandboxLimitError, match="2000-byte value limit"):
                box.execute("SELECT p FROM vbig")
            for view, named in (
                ("vr", "function randomblob()"),
                ("vt", "fts3_tokenizer()"),
                ("vs", "dbstat"),
                ("vl", "load_extension()"),
                ("vf", "PRAGMA function_list"),
            ):
                with pytest.raises(
                    SandboxPermissionError, match=named.replace("(", r"\(").replace(")", r"\)")
                ):
                    box.execute(f"SELECT * FROM {view}")
