"""Interactive text-to-SQL: a session that keeps the history and the last SQL across turns."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zjulab.common.errors import ZjulabError
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
        result: Rows from the sandbox (None when not executed, when it failed, or once the
            rows were dropped from the session's history, see ``results_dropped``).
        error: Why the turn has no result ("" on success): the model failed, no valid
            candidate, or the sandbox refused or stopped the query.
        results_dropped: The rows were released to bound the session's memory.
    """

    utterance: str
    prediction: Prediction
    result: ExecutionResult | None = None
    error: str = ""
    results_dropped: bool = False

    @property
    def sql(self) -> str:
        """The SQL of this turn."""
        return self.prediction.sql

    @property
    def ok(self) -> bool:
        """Whether the turn produced valid SQL (and, with a database, executed it)."""
        return not self.error and self.prediction.valid


def _accepts_sandbox(parser: Any) -> bool:
    try:
        return "sandbox" in inspect.signature(parser.predict_turn).parameters
    except (TypeError, ValueError):
        return False


class Text2SQLSession:
    """Answer a sequence of questions over one database, carrying the context forward.

    After each turn the utterance joins the history; the turn's SQL becomes the "last SQL" of
    the next turn only when it was valid and (with a database) executed, as in HIE-SQL's
    inference: a failed turn never hands an apology or a refused query to the next one.

    One :class:`~zjulab.hiesql.config.SandboxConfig` governs every execution of the session:
    the parser's candidate check runs in the session's sandbox and the chosen candidate's rows
    are reused, not executed twice. A turn whose parser fails (e.g. the model server answers
    500) is recorded with its error and the session goes on.

    Args:
        parser: A :class:`TurnParser`.
        db_path: SQLite file to run queries on (read-only sandbox); optional when ``schema``
            is given.
        schema: Schema; read from ``db_path`` when omitted.
        sandbox_config: Sandbox limits (default ``SandboxConfig()``: statements run in a worker
            process killed at ``timeout_s``, a hard bound even on a single long SQLite
            opcode). The schema and the values for linking are read through the same sandbox.
        execute: Run each predicted query in the sandbox.
        keep_results: Result rows kept for this many most recent turns; older turns keep their
            SQL and error but drop their rows (``results_dropped``), so a long session's memory
            stays bounded by about ``keep_results * sandbox_config.max_bytes``.

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
        keep_results: int = 5,
    ) -> None:
        if schema is None and db_path is None:
            raise HieSqlConfigError("Text2SQLSession needs a db_path or a schema")
        if keep_results < 0:
            raise HieSqlConfigError(f"keep_results must be >= 0, got {keep_results}")
        self.parser = parser
        self.db_path = Path(db_path) if db_path is not None else None
        self.sandbox_config = sandbox_config or SandboxConfig()
        self.sandbox = (
            SQLiteSandbox(self.db_path, self.sandbox_config)
            if (execute and self.db_path is not None)
            else None
        )
        # the schema is read through the session's sandbox too (a user's file is untrusted)
        try:
            self.schema = (
                schema if schema is not None else schema_from_sqlite(self.db_path, sandbox=self.sandbox)  # type: ignore[arg-type]
            )
        except BaseException:
            self.close()
            raise
        self.keep_results = keep_results
        self.history: list[str] = []
        self.last_sql: str | None = None
        self.turns: list[SessionTurn] = []
        self._pass_sandbox = _accepts_sandbox(parser)

    def ask(self, utterance: str) -> SessionTurn:
        """Parse (and run) one question in the context of the earlier ones.

        Args:
            utterance: The question.

        Returns:
            The answered turn (with ``error`` set when it failed; it never raises for a model
            or execution failure).
        """
        kwargs: dict[str, Any] = {"sandbox": self.sandbox} if self._pass_sandbox and self.sandbox else {}
        try:
            pred = self.parser.predict_turn(
                self.schema, utterance, list(self.history), self.last_sql, self.db_path, **kwargs
            )
        except (ZjulabError, OSError, ValueError, RuntimeError) as exc:
            logger.warning("turn %d failed: %s", len(self.turns) + 1, exc)
            pred = Prediction("", False, error=f"{type(exc).__name__}: {exc}")
        turn = SessionTurn(utterance, pred)
        if pred.error:
            turn.error = pred.error
        elif not pred.valid:
            why = "; ".join(r for _c, r in pred.rejected[-2:])
            turn.error = str(
                InvalidSQLError(
                    f"no valid candidate; top one was {pred.sql!r}" + (f" ({why})" if why else "")
                )
            )
        elif self.sandbox is not None:
            if pred.result is not None:
                turn.result = pred.result
            else:
                try:
                    turn.result = self.sandbox.execute(pred.sql)
                except SandboxError as exc:
                    turn.error = str(exc)
        self.history.append(utterance)
        if turn.ok:
            self.last_sql = pred.sql
        self.turns.append(turn)
        self._bound_memory()
        return turn

    def _bound_memory(self) -> None:
        cutoff = len(self.turns) - self.keep_results
        for turn in self.turns[: max(0, cutoff)]:
            if turn.result is not None:
                turn.result = None
                turn.results_dropped = True
            turn.prediction.result = None

    def reset(self) -> None:
        """Forget the history and the last SQL (start a new interaction)."""
        self.history.clear()
        self.last_sql = None
        self.turns.clear()

    def close(self) -> None:
        """Close the sandbox connection."""
        if self.sandbox is not None:
            self.sandbox.close()

    def __enter__(self) -> Text2SQLSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
