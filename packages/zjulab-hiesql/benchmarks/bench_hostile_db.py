"""Reading a hostile user database: bounded by the library's budgets, against a bare connection.

The database holds a table and views nested into 3**10 references each (every view takes
~0.2 s to prepare). Baseline in the same process: a bare ``sqlite3`` connection reading the
same schema (``pragma_table_info`` of every table and view), which is what
``schema_from_sqlite`` did before it read through the sandbox.

    python benchmarks/bench_hostile_db.py [--views 60]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from zjulab.hiesql import schema_from_sqlite
from zjulab.hiesql.config import LinkingConfig
from zjulab.hiesql.errors import SchemaFileError
from zjulab.hiesql.linking import build_linking_graph


def build(path: Path, views: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE city (name TEXT)")
    conn.execute("INSERT INTO city VALUES ('Lyon')")
    conn.execute("CREATE VIEW v0 AS SELECT name FROM city")
    for i in range(1, 11):
        p = f"v{i - 1}"
        conn.execute(
            f"CREATE VIEW v{i} AS SELECT name FROM {p} UNION ALL SELECT name FROM {p} UNION ALL SELECT name FROM {p}"
        )
    for k in range(views):
        conn.execute(f"CREATE VIEW w{k} AS SELECT name FROM v10")
    conn.commit()
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "nested.sqlite"
        build(db, args.views)
        conn = sqlite3.connect(db)
        t0 = time.perf_counter()
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        for n in names:
            conn.execute("SELECT name FROM pragma_table_info(?)", (n,)).fetchall()
        bare = time.perf_counter() - t0
        conn.close()
        print(f"bare connection, whole schema: {bare:.2f} s ({len(names)} tables and views)")
        for budget in (1.0, 2.0):
            t0 = time.perf_counter()
            try:
                schema_from_sqlite(db, timeout_s=budget)
                outcome = "read"
            except SchemaFileError:
                outcome = "SchemaFileError"
            dt = time.perf_counter() - t0
            print(
                f"schema_from_sqlite(timeout_s={budget:g}): {outcome} after {dt:.2f} s = {dt / budget:.2f} x budget, {dt / bare:.3f} x bare"
            )
        small = Path(tmp) / "small.sqlite"
        build(small, 2)
        schema = schema_from_sqlite(small, timeout_s=60)
        t0 = time.perf_counter()
        graph = build_linking_graph(
            schema, "Which city is Lyon?", [], None, small, LinkingConfig(value_timeout_s=2.0)
        )
        dt = time.perf_counter() - t0
        linked = "value_match" in " ".join(graph.linked_schema().get("city.name", []))
        print(
            f"value linking over {len(schema.table_names_original)} tables and views: {dt:.2f} s = {dt / 2.0:.2f} x budget; Lyon linked by value: {linked}"
        )


if __name__ == "__main__":
    main()
