from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

from zjulab.hiesql.schema import Schema

HERE = Path(__file__).resolve().parent


@pytest.fixture
def concert_schema() -> Schema:
    """singer(singer_id*, name, country, age) / concert(concert_id*, singer_id -> singer, year, stadium)."""
    return Schema(
        db_id="concert",
        table_names_original=("singer", "concert"),
        column_names_original=(
            (-1, "*"),
            (0, "singer_id"),
            (0, "name"),
            (0, "country"),
            (0, "age"),
            (1, "concert_id"),
            (1, "singer_id"),
            (1, "year"),
            (1, "stadium"),
        ),
        column_types=("text", "number", "text", "text", "number", "number", "number", "number", "text"),
        primary_keys=(1, 5),
        foreign_keys=((6, 1),),
    )


@pytest.fixture
def concert_db(tmp_path: Path) -> Path:
    path = tmp_path / "concert.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES singer(singer_id),
                              year INTEGER, stadium TEXT);
        INSERT INTO singer VALUES (1, 'Ana', 'France', 30), (2, 'Bo', 'Japan', 41), (3, 'Cy', 'France', 25);
        INSERT INTO concert VALUES (1, 1, 2014, 'Arena'), (2, 1, 2015, 'Dome'), (3, 2, 2014, 'Arena');
        """
    )
    conn.close()
    return path


def load_benchmark_module(name: str):  # the perturbation helper lives with the benchmarks
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
