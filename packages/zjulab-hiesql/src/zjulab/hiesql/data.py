"""SParC/CoSQL interactions and the turn-per-line gold/prediction files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zjulab.common.io import atomic_write_text
from zjulab.hiesql.errors import SchemaFileError
from zjulab.hiesql.schema import read_json_file, read_text_file

logger = logging.getLogger(__name__)

__all__ = [
    "Interaction",
    "Turn",
    "load_interactions",
    "read_turn_file",
    "read_turn_file_lines",
    "write_turn_file",
]


@dataclass(frozen=True)
class Turn:
    """One utterance of an interaction with its gold SQL (empty when unknown).

    Args:
        utterance: The user's question at this turn.
        sql: The gold SQL for this turn ("" at prediction time).
    """

    utterance: str
    sql: str = ""


@dataclass(frozen=True)
class Interaction:
    """A sequence of turns over one database.

    Args:
        db_id: The database the interaction is about.
        turns: The turns in order.
        interaction_id: An identifier (the position in the source file by default).
    """

    db_id: str
    turns: tuple[Turn, ...] = field(default_factory=tuple)
    interaction_id: str = ""

    def __len__(self) -> int:
        return len(self.turns)


def load_interactions(path: str | Path) -> list[Interaction]:
    """Load SParC/CoSQL interactions (``dev.json`` in the editsql layout).

    Each entry has ``database_id`` and ``interaction`` (a list of ``{utterance, query}``).

    Args:
        path: The JSON file.

    Returns:
        The interactions in file order.

    Raises:
        SchemaFileError: When the file is missing, not JSON, or an entry lacks a key.
    """
    p = Path(path)
    data = read_json_file(p, "interaction file")
    if not isinstance(data, list):
        raise SchemaFileError(f"{p}: expected a JSON list of interactions, got {type(data).__name__}")
    out: list[Interaction] = []
    for i, entry in enumerate(data):
        try:
            db = entry.get("database_id", entry.get("db_id"))
            turns = []
            for j, t in enumerate(entry["interaction"]):
                utt, sql = t["utterance"], t.get("query", t.get("sql_query", ""))
                if not isinstance(utt, str) or not isinstance(sql, (str, type(None))):
                    raise SchemaFileError(
                        f"{p}: interaction {i}, turn {j}: utterance must be a string, got {utt!r}"
                        if not isinstance(utt, str)
                        else f"{p}: interaction {i}, turn {j}: query must be a string, got {sql!r}"
                    )
                turns.append(Turn(utt, sql or ""))
        except (KeyError, TypeError, AttributeError) as exc:
            raise SchemaFileError(f"{p}: interaction {i} is malformed ({exc!r})") from exc
        if not db:
            raise SchemaFileError(f"{p}: interaction {i} has no database_id")
        out.append(Interaction(str(db), tuple(turns), str(entry.get("interaction_id", i))))
    return out


def read_turn_file(path: str | Path) -> list[list[tuple[str, str]]]:
    """Read a gold or prediction file: one ``SQL<TAB>db_id`` per turn, blank line between interactions.

    A prediction line may omit the ``db_id``. A final interaction without a trailing blank line is
    kept, and runs of blank lines do not create empty interactions (the official script would drop
    the former and count the latter).

    Args:
        path: The text file.

    Returns:
        One list of ``(sql, db_id)`` per interaction.

    Raises:
        SchemaFileError: When the file does not exist, is a directory or is not UTF-8 text.
    """
    return [[(sql, db) for sql, db, _ in inter] for inter in read_turn_file_lines(path)]


def read_turn_file_lines(path: str | Path) -> list[list[tuple[str, str, int]]]:
    """Like :func:`read_turn_file`, with the 1-based line number of each turn: ``(sql, db_id, line)``."""
    p = Path(path)
    lines = read_text_file(p, "turn file").splitlines()
    out: list[list[tuple[str, str, int]]] = []
    block: list[tuple[str, str, int]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            if block:
                out.append(block)
            block = []
            continue
        parts = line.strip().split("\t")
        block.append((parts[0], parts[1].strip() if len(parts) > 1 else "", n))
    if block:
        out.append(block)
    return out


def write_turn_file(path: str | Path, interactions: Sequence[Sequence[tuple[str, str]]]) -> None:
    """Write ``(sql, db_id)`` turns in the gold-file layout, atomically.

    Newlines and tabs inside SQL are replaced by spaces so each turn stays on one line.

    Args:
        path: Destination file.
        interactions: One sequence of ``(sql, db_id)`` per interaction.
    """
    chunks = []
    for inter in interactions:
        for sql, db in inter:
            flat = " ".join(sql.replace("\t", " ").split())
            chunks.append(f"{flat}\t{db}\n")
        chunks.append("\n")
    atomic_write_text(path, "".join(chunks))
