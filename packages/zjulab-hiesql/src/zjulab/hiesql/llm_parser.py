"""The LLM path: any ``ChatModel`` prompted with the linked schema, the history and the last SQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zjulab.common.protocols import ChatModel
from zjulab.hiesql.config import ContextMode, LinkingConfig
from zjulab.hiesql.errors import HieSqlConfigError
from zjulab.hiesql.linking import build_linking_graph
from zjulab.hiesql.prompting import build_llm_conversation
from zjulab.hiesql.reranking import Prediction, rerank_candidates
from zjulab.hiesql.sandbox import SQLiteSandbox
from zjulab.hiesql.schema import Schema
from zjulab.hiesql.validity import extract_sql_answer

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "LLMParser"]

#: Answer budget: 99.9% of SParC and 99.7% of CoSQL dev gold SQL fit, even inside a ```sql fence,
#: with the default model's (SmolLM2) tokenizer; 48 tokens fit 73% (BENCHMARKS.md).
DEFAULT_MAX_NEW_TOKENS = 160


class LLMParser:
    """Text-to-SQL through a chat model, with the execution-guided validity guard over its candidates.

    The greedy answer is generated first; only when it fails the guard (no complete query, an
    unknown table or column, or an error in the sandbox) are ``num_candidates - 1`` sampled
    answers generated, and the first one that passes is kept. An answer cut off at
    ``max_new_tokens`` (``finish_reason == "length"``) is refused, never repaired.

    Args:
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel` (local or served).
        num_candidates: Most candidates generated per turn.
        temperature: Sampling temperature of candidates after the first.
        max_new_tokens: Longest answer.
        context: What the prompt includes (``"history_sql"`` is HIE-SQL's input).
        examples: Optional ``db_id -> [(question, SQL), ...]`` demonstrations.
        linking: Schema-linking settings.
        seed: Seed for sampled candidates.
        schema_budget: Most prompt tokens the schema may take (``None``: the whole schema);
            within it, linked tables and columns come first (see
            :func:`~zjulab.hiesql.prompting.pruned_schema_ddl`).
    """

    def __init__(
        self,
        chat_model: ChatModel,
        num_candidates: int = 1,
        temperature: float = 0.7,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        context: ContextMode = "history_sql",
        examples: dict[str, Sequence[tuple[str, str]]] | None = None,
        linking: LinkingConfig | None = None,
        seed: int = 0,
        schema_budget: int | None = None,
    ) -> None:
        if num_candidates < 1:
            raise HieSqlConfigError(f"num_candidates must be >= 1, got {num_candidates}")
        if max_new_tokens < 1:
            raise HieSqlConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if schema_budget is not None and schema_budget < 1:
            raise HieSqlConfigError(f"schema_budget must be >= 1, got {schema_budget}")
        self.chat_model = chat_model
        self.num_candidates = num_candidates
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.context = context
        self.examples = examples or {}
        self.linking = linking or LinkingConfig()
        self.seed = seed
        self.schema_budget = schema_budget

    def _answers(self, conv: Any, **sampling: Any) -> list[tuple[str, str]]:
        """``(text, finish_reason)`` of one answer."""
        gen = getattr(self.chat_model, "generate_results", None)
        if gen is not None:
            out = []
            for r in gen([conv], max_new_tokens=self.max_new_tokens, **sampling):
                if getattr(r, "error", None) is not None:
                    raise r.error
                out.append((r.text, str(getattr(r, "finish_reason", "") or "")))
            return out
        return [
            (t, "") for t in self.chat_model.generate([conv], max_new_tokens=self.max_new_tokens, **sampling)
        ]

    def _candidates(
        self, answers: list[tuple[str, str]], rejected: list[tuple[str, str]]
    ) -> list[tuple[str, float]]:
        out = []
        for text, finish in answers:
            if finish == "length":
                rejected.append((text[-120:], f"answer cut off at max_new_tokens={self.max_new_tokens}"))
                continue
            ext = extract_sql_answer(text)
            if not ext.sql:
                rejected.append((text[:120], f"no SQL taken from the answer: {ext.reason}"))
                continue
            out.append((ext.sql, 0.0))
        return out

    def predict_turn(
        self,
        schema: Schema,
        utterance: str,
        history: Sequence[str] = (),
        last_sql: str | None = None,
        db_path: str | Path | None = None,
        sandbox: SQLiteSandbox | None = None,
    ) -> Prediction:
        """Predict the SQL of one turn.

        Args:
            schema: Database schema.
            utterance: Current question.
            history: Earlier questions, oldest first.
            last_sql: The previous turn's SQL (a valid, executed one).
            db_path: Optional SQLite file (value linking and execution guard).
            sandbox: The sandbox that reads values for linking and checks candidates (its
                limits govern); one over ``db_path`` with default limits when omitted.

        Returns:
            The prediction.

        Raises:
            zjulab.common.errors.RemoteModelError: When the model server fails (after the
                client's retries).
        """
        graph = build_linking_graph(
            schema, utterance, history, last_sql, db_path, self.linking, sandbox=sandbox
        )
        conv = build_llm_conversation(
            schema,
            utterance,
            history,
            last_sql,
            graph,
            self.examples.get(schema.db_id, ()),
            self.context,
            schema_budget=self.schema_budget,
        )
        rejected: list[tuple[str, str]] = []
        cands = self._candidates(self._answers(conv, temperature=0.0), rejected)
        pred = rerank_candidates(cands, schema, db_path, graph, sandbox=sandbox, rejected=rejected)
        if pred.valid or self.num_candidates == 1:
            return pred
        all_cands = list(cands)
        late: list[tuple[str, str]] = []
        for k in range(1, self.num_candidates):
            all_cands += self._candidates(
                self._answers(conv, temperature=self.temperature, seed=self.seed + k), late
            )
        rejected = list(pred.rejected) + late
        tried = {c for c, _ in cands}
        fresh = [c for c in all_cands if c[0] not in tried]
        pred2 = rerank_candidates(fresh, schema, db_path, graph, sandbox=sandbox, rejected=rejected)
        pred2.candidates = all_cands
        if not pred2.valid:
            pred2.sql = all_cands[0][0] if all_cands else ""
        return pred2
