"""Real files and real databases in, typed errors out."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from zjulab.hiesql.data import load_interactions, read_turn_file
from zjulab.hiesql.demo_db import build_demo_database
from zjulab.hiesql.errors import SchemaFileError
from zjulab.hiesql.prompting import quote_identifier, schema_ddl
from zjulab.hiesql.schema import load_tables, natural_name, schema_from_sqlite


def _entry(**over):
    e = {
        "db_id": "d",
        "table_names_original": ["t"],
        "column_names_original": [[-1, "*"], [0, "a"], [0, "b"]],
        "column_types": ["text", "number", "text"],
        "primary_keys": [1],
        "foreign_keys": [],
    }
    e.update(over)
    return e


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"column_types": ["text", "number"]},
            r"entry 1: schema 'd': column_types has 2 entries, expected 3",
        ),
        ({"column_names": [[-1, "*"]]}, r"entry 1: schema 'd': column_names has 1 entries, expected 3"),
        ({"table_names": ["x", "y"]}, r"entry 1: .*table_names has 2 entries, expected 1"),
        ({"primary_keys": [7]}, r"entry 1: .*primary key 7 out of range"),
        ({"foreign_keys": [[1, 9]]}, r"entry 1: .*foreign key \(1, 9\) out of range"),
        ({"column_names_original": [[-1, "*"], [3, "a"], [0, "b"]]}, r"entry 1: .*bad table index 3"),
        ({"db_id": "d0"}, r"entry 1: db_id 'd0' appears twice"),
    ],
)
def test_bad_tables_entry_names_file_and_entry(tmp_path, over, message):
    p = tmp_path / "tables.json"
    p.write_text(json.dumps([_entry(db_id="d0"), _entry(**over)]))
    with pytest.raises(SchemaFileError, match=rf"tables\.json: {message}"):
        load_tables(p)


def test_unreadable_files_are_typed_errors(tmp_path):
    latin = tmp_path / "gold.txt"
    latin.write_bytes("SELECT 1\tdb\nSELECT 'caf\xe9'\tdb\n".encode("latin-1"))
    with pytest.raises(SchemaFileError, match=r"gold\.txt:2: not UTF-8"):
        read_turn_file(latin)
    with pytest.raises(SchemaFileError, match="is a directory"):
        load_tables(tmp_path)
    with pytest.raises(SchemaFileError, match="is a directory"):
        read_turn_file(tmp_path)
    with pytest.raises(SchemaFileError, match=r"database file not found: .* \(a directory\)"):
        schema_from_sqlite(tmp_path)
    notdb = tmp_path / "x.sqlite"
    notdb.write_text("hello")
    with pytest.raises(SchemaFileError, match="not a readable SQLite database"):
        schema_from_sqlite(notdb)


def test_null_utterance_is_an_error_not_the_string_none(tmp_path):
    p = tmp_path / "dev.json"
    p.write_text(
        json.dumps(
            [
                {
                    "database_id": "d",
                    "interaction": [
                        {"utterance": "ok", "query": "SELECT 1"},
                        {"utterance": None, "query": "SELECT 2"},
                    ],
                }
            ]
        )
    )
    with pytest.raises(SchemaFileError, match=r"interaction 0, turn 1: utterance must be a string, got None"):
        load_interactions(p)
    p.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(SchemaFileError, match="expected a JSON list of interactions"):
        load_interactions(p)


def test_cli_reports_bad_files_without_traceback(tmp_path, capsys):
    from zjulab.hiesql.cli import main

    bad = tmp_path / "tables.json"
    bad.write_text(json.dumps([_entry(column_types=["text"])]))
    gold = tmp_path / "gold.txt"
    gold.write_bytes(b"SELECT a FROM t\td\n\n")
    assert main(["eval", str(gold), str(gold), "--tables", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "column_types has 1 entries, expected 3" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path), str(gold), "--tables", str(bad)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_schema_from_sqlite_as_authors_write_it(tmp_path):
    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE author (author_id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE "order items" ("item id" INTEGER PRIMARY KEY, "Author" INTEGER REFERENCES author,
                                    qty INTEGER, "order" TEXT);
        CREATE TABLE pair (a INTEGER, b INTEGER, PRIMARY KEY (b, a));
        CREATE TABLE link (x INTEGER, y INTEGER, FOREIGN KEY (x, y) REFERENCES pair);
        CREATE VIEW canadian AS SELECT name FROM author WHERE name LIKE 'C%';
        """
    )
    conn.close()
    s = schema_from_sqlite(db)
    assert s.table_names_original == ("author", "order items", "pair", "link", "canadian")
    fks = {(s.qualified_column(a), s.qualified_column(b)) for a, b in s.foreign_keys}
    assert fks == {
        ("order items.Author", "author.author_id"),  # REFERENCES author: its primary key
        ("link.x", "pair.b"),  # composite keys pair up in primary-key order
        ("link.y", "pair.a"),
    }
    assert s.qualified_column(s.columns_of(4)[0]) == "canadian.name"
    ddl = schema_ddl(s)
    assert (
        'CREATE TABLE "order items" (\n  "item id" number primary key,\n  Author number references author(author_id),'
        in ddl
    )
    assert '  "order" text\n);' in ddl
    assert quote_identifier('a"b') == '"a""b"' and quote_identifier("name") == "name"


def test_naming_styles_link_like_snake_case(tmp_path):
    from zjulab.hiesql.linking import build_linking_graph

    assert {
        natural_name(n) for n in ("order_id", "OrderID", "orderId", "Order ID", "ORDER_ID", "order-id")
    } == {"order id"}
    db = tmp_path / "styles.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        'CREATE TABLE CustomerOrders (OrderID INTEGER PRIMARY KEY, shipCountry TEXT, "Unit Price" REAL);'
    )
    conn.close()
    s = schema_from_sqlite(db)
    g = build_linking_graph(
        s, "What is the unit price of each customer order and its ship country?", [], None, None
    )
    linked = g.linked_schema()
    for item in ("CustomerOrders", "CustomerOrders.shipCountry", "CustomerOrders.Unit Price"):
        assert any(h.startswith("exact_match") for h in linked[item]), item


def test_demo_database_never_replaces_a_file(tmp_path):
    mine = tmp_path / "bookshop.sqlite"
    mine.write_text("my notes")
    with pytest.raises(SchemaFileError, match="already exists"):
        build_demo_database(mine)
    assert mine.read_text() == "my notes"
    fresh = build_demo_database(tmp_path / "new" / "b.sqlite")
    assert build_demo_database(fresh, exist_ok=True) == fresh
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["b.sqlite"]  # no temporary left


def test_demo_database_build_killed_midway_leaves_what_the_next_build_removes(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "b.sqlite"
    # a build whose process died: its folder is named with the dead pid, as every zjulab temporary
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = tmp_path / f".b.sqlite.{int(done.stdout)}.abc.tmp"
    left.mkdir()
    (left / "b.sqlite").write_bytes(b"half a database")
    (left / "b.sqlite-journal").write_bytes(b"its journal")
    build_demo_database(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite"]


def test_value_linking_reads_names_with_quotes(tmp_path):
    from zjulab.hiesql.linking import build_linking_graph

    db = tmp_path / "q.sqlite"
    conn = sqlite3.connect(db)
    conn.execute('CREATE TABLE "the ""best"" shop" (id INTEGER PRIMARY KEY, "city ""name""" TEXT)')
    conn.execute('INSERT INTO "the ""best"" shop" VALUES (1, \'Lyon\')')
    conn.commit()
    conn.close()
    s = schema_from_sqlite(db)
    g = build_linking_graph(s, "Which shops are in Lyon?", [], None, db)
    assert any(h.startswith("value_match") for h in g.linked_schema()['the "best" shop.city "name"'])


def test_predict_cli_refuses_to_overwrite(tmp_path):
    from zjulab.hiesql.cli import main

    out = tmp_path / "pred.txt"
    out.write_text("my earlier predictions")
    rc = main(
        ["predict", "--model", str(tmp_path / "none"), "--data", "x", "--tables", "y", "--out", str(out)]
    )
    assert rc == 2 and out.read_text() == "my earlier predictions"


@pytest.mark.timeout(60)
def test_value_reading_has_a_time_budget(tmp_path):
    from zjulab.hiesql.config import LinkingConfig
    from zjulab.hiesql.linking import build_linking_graph

    db = tmp_path / "slow.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE city (name TEXT); INSERT INTO city VALUES ('Lyon');"
        "CREATE VIEW endless AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) "
        "SELECT printf('v%d', x % 3) AS label FROM r;"
    )
    conn.close()
    s = schema_from_sqlite(db)
    assert s.table_names_original == ("city", "endless")
    start = time.monotonic()
    g = build_linking_graph(s, "Cities named Lyon?", [], None, db, LinkingConfig(value_timeout_s=0.5))
    assert time.monotonic() - start < 3.0  # SELECT DISTINCT on the endless view never finishes
    assert any(h.startswith("value_match") for h in g.linked_schema()["city.name"])


def test_schema_from_sqlite_leaves_out_a_view_that_cannot_be_prepared(tmp_path):
    import sqlite3

    from zjulab.hiesql import schema_from_sqlite

    db = tmp_path / "views.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT);"
        "CREATE VIEW tok AS SELECT fts3_tokenizer('simple') AS addr;"
        "CREATE VIEW names AS SELECT name FROM person;"
    )
    conn.close()
    schema = schema_from_sqlite(db)
    assert schema.table_names_original == ("person", "names")
    assert schema.column_names_original == ((-1, "*"), (0, "id"), (0, "name"), (1, "name"))


def test_demo_database_leftover_of_a_build_killed_after_linking_is_removed_by_the_next_call(tmp_path):
    import subprocess
    import sys

    target = build_demo_database(tmp_path / "b.sqlite")
    # killed after linking its database into place, before removing its folder (a hard link)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    left = tmp_path / f".b.sqlite.{int(done.stdout)}.abc.tmp"
    left.mkdir()
    os.link(target, left / "b.sqlite")
    assert build_demo_database(target, exist_ok=True) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite"]
    left.mkdir()
    with pytest.raises(SchemaFileError, match="already exists"):
        build_demo_database(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite"]


def test_concurrent_demo_database_builds_with_exist_ok_all_return_it(tmp_path):
    import subprocess
    import sys
    import time

    racer = (
        "import sys, time\n"
        "from zjulab.hiesql.demo_db import build_demo_database\n"
        "t0 = float(sys.argv[2])\n"
        "while time.time() < t0: pass\n"
        "print(build_demo_database(sys.argv[1], exist_ok=True))\n"
    )
    for round_ in range(2):
        target = tmp_path / f"race{round_}.sqlite"
        start = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", racer, str(target), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-500:] for _, e in outs]
        assert all(o.strip() == str(target) for o, _ in outs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race0.sqlite", "race1.sqlite"]


def test_demo_database_without_hard_links_never_replaces_a_file_that_appeared(tmp_path, monkeypatch):
    # a file system without hard links: the name is claimed exclusively before the rename, so a
    # file that appeared during the build is refused, never replaced
    target = tmp_path / "b.sqlite"

    def no_links(src, dst):
        target.write_text("appeared meanwhile")
        raise PermissionError("no hard links here")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(SchemaFileError, match="already exists"):
        build_demo_database(target)
    assert target.read_text() == "appeared meanwhile"
    monkeypatch.setattr(os, "link", lambda src, dst: (_ for _ in ()).throw(PermissionError("no links")))
    fresh = build_demo_database(tmp_path / "c.sqlite")
    assert build_demo_database(fresh, exist_ok=True) == fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite", "c.sqlite"]
