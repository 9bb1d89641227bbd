"""The bundled demo database (a small bookshop written for this project)."""

from __future__ import annotations

import shutil
import sqlite3
from importlib import resources
from pathlib import Path

from zjulab.common.io import place_new_file, remove_stale_temps, temp_dir_beside
from zjulab.hiesql.errors import SchemaFileError

__all__ = ["DEMO_EXAMPLES", "DEMO_QUESTIONS", "build_demo_database"]

#: The three-turn interaction the demo runs.
DEMO_QUESTIONS = (
    "List the names of all authors.",
    "Which of them are from Canada?",
    "What are the titles of the books written by them?",
)
#: Demonstrations given to the LLM path on the demo database (different questions).
DEMO_EXAMPLES = (
    (
        "What is the country of the author named Dev Raman?",
        "SELECT country FROM author WHERE name = 'Dev Raman'",
    ),
    (
        "Show the quantity sold of books by the author named Ada Lindqvist.",
        "SELECT T3.quantity FROM author AS T1 JOIN book AS T2 ON T1.author_id = T2.author_id "
        "JOIN sale AS T3 ON T2.book_id = T3.book_id WHERE T1.name = 'Ada Lindqvist'",
    ),
    ("Show the titles of all books.", "SELECT title FROM book"),
)


def build_demo_database(path: str | Path, *, exist_ok: bool = False) -> Path:
    """Create the bookshop SQLite database at ``path`` (written atomically) and return the path.

    Args:
        path: Where to write it; an existing file is never replaced.
        exist_ok: Return an existing *bookshop* database at ``path`` instead of raising.

    Raises:
        SchemaFileError: When ``path`` exists (and is not the bookshop database with
            ``exist_ok``).
    """
    script = resources.files("zjulab.hiesql").joinpath("resources/bookshop.sql").read_text(encoding="utf-8")
    target = Path(path)
    if target.exists() or target.is_symlink():
        return _existing(target, exist_ok)
    # built inside a temporary folder (its journal too), named and swept as every zjulab
    # temporary: a build killed midway leaves only that folder, which the next call removes
    work = temp_dir_beside(target)
    try:
        tmp = work / target.name
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(script)
        finally:
            conn.close()
        if not place_new_file(tmp, target):  # never replaces a file: another build won the race
            return _existing(target, exist_ok)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _existing(target: Path, exist_ok: bool) -> Path:
    """``target`` when it is the bookshop database and ``exist_ok``; otherwise the refusal."""
    remove_stale_temps(target)  # a build killed after its database was linked into place
    if exist_ok and target.is_file():
        from zjulab.hiesql.schema import schema_from_sqlite

        if schema_from_sqlite(target).table_names_original[:3] == ("author", "book", "sale"):
            return target
    raise SchemaFileError(f"{target} already exists; build_demo_database never replaces a file")
