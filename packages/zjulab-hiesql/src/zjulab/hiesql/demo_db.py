"""The bundled demo database (a small bookshop written for this project)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path

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


def build_demo_database(path: str | Path) -> Path:
    """Create the bookshop SQLite database at ``path`` (replacing it atomically) and return the path."""
    script = resources.files("zjulab.hiesql").joinpath("resources/bookshop.sql").read_text(encoding="utf-8")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp_name)
        try:
            conn.executescript(script)
        finally:
            conn.close()
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
