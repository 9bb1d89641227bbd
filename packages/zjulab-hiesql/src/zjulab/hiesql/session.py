"""Interactive text-to-SQL: a session that keeps the history and the last SQL across turns."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from zjulab.hiesql.config import SandboxConfig
from zjulab.hiesql.errors import HieSqlConfigError, InvalidSQLError, SandboxError
from zjulab.hiesql.reranking import Prediction
from zjulab.hiesql.sandbox import ExecutionResult, SQLiteSandbox
from zjulab.hiesql.schema import Schema, schema_from_sqlite

logger = logging.getLogger(__name__)

__all__ = ["SessionTurn", "Text2SQLSession", "TurnParser"]


@runtime_checkable
class TurnParser(Protocol):
    """Anything that predicts one turn (``HieSqlParser``, ``LLMParser``)."""

    def predict_turn(
        self,
        schema: Schema,
        utterance: str,
        history: Sequence[str] = (),
        last_sql: str | None = None,
        db_path: str | Path | None = None,
    ) -> Prediction:
        """Predict the SQL of one turn."""
        ...


@dataclass
class SessionTurn:
    """One answered turn.

    Args:
        utterance: The question.
        prediction: The parser's prediction (SQL, candidates, linking graph).
        result: Rows from the sandbox (None when not executed or when it failed).
        error: Why execution failed or was skipped ("" on success).
    """

    utterance: str
    prediction: Prediction
    result: ExecutionResult | None = None
    error: str = ""

    @property
    def sql(self) -> str:
        """The SQL of this turn."""
        return self.prediction.sql


class Text2SQLSession:
    """Answer a sequence of questions over one database, carrying the context forward.

    After each turn the utterance joins the history and the predicted SQL becomes the "last
    SQL" of the next turn, exactly as in HIE-SQL's inference.

    Args:
        parser: A :class:`TurnParser`.
        db_path: SQLite file to run queries on (read-only sandbox); optional when ``schema``
            is given.
        schema: Schema; read from ``db_path`` when omitted.
        sandbox_config: Sandbox limits.
        execute: Run each predicted query in the sandbox.

    Raises:
        HieSqlConfigError: When neither ``db_path`` nor ``schema`` is given.
    """

    def __init__(
        self,
        parser: TurnParser,
        db_path: str | Path | None = None,
        schema: Schema | None = None,
        sandbox_config: SandboxConfig | None = None,
        execute: bool = True,
    ) -> None:
        if schema is None and db_path is None:
            raise HieSqlConfigError("Text2SQLSession needs a db_path or a schema")
        self.parser = parser
        self.db_path = Path(db_path) if db_path is not None else None
        self.schema = schema if schema is not None else schema_from_sqlite(self.db_path)  # type: ignore[arg-type]
        self.sandbox = (
            SQLiteSandbox(self.db_path, sandbox_config) if (execute and self.db_path is not None) else None
        )
        self.history: list[str] = []
        self.last_sql: str | None = None
        self.turns: list[SessionTurn] = []

    def ask(self, utterance: str) -> SessionTurn:
        """Parse (and run) one question in the context of the earlier ones.

        Args:
            utterance: The question.

        Returns:
            The answered turn.
        """
        pred = self.parser.predict_turn(
            self.schema, utterance, list(self.history), self.last_sql, self.db_path
        )
        turn = SessionTurn(utterance, pred)
        if self.sandbox is not None:
            if not pred.valid:
                turn.error = str(InvalidSQLError(f"no valid candidate; top one was {pred.sql!r}"))
            else:
                try:
                    turn.result = self.sandbox.execute(pred.sql)
                except SandboxError as exc:
                    turn.error = str(exc)
        self.history.append(utterance)
        self.last_sql = pred.sql if pred.sql else self.last_sql
        self.turns.append(turn)
        return turn

    def reset(self) -> None:
        """Forget the history and the last SQL (start a new interaction)."""
        self.history.clear()
        self.last_sql = None
        self.turns.clear()

    def close(self) -> None:
        """Close the sandbox connection."""
        if self.sandbox is not None:
            self.sandbox.close()
