"""The LLM path: any ``ChatModel`` prompted with the linked schema, the history and the last SQL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from zjulab.common.protocols import ChatModel
from zjulab.hiesql.config import ContextMode, LinkingConfig
from zjulab.hiesql.errors import HieSqlConfigError
from zjulab.hiesql.linking import build_linking_graph
from zjulab.hiesql.prompting import build_llm_conversation
from zjulab.hiesql.reranking import Prediction, rerank_candidates
from zjulab.hiesql.schema import Schema
from zjulab.hiesql.validity import extract_sql

logger = logging.getLogger(__name__)

__all__ = ["LLMParser"]


class LLMParser:
    """Text-to-SQL through a chat model, with the validity guard over its candidates.

    The first candidate is greedy; the others are sampled (``temperature``), and the best valid
    one is kept (see :func:`~zjulab.hiesql.reranking.rerank_candidates`).

    Args:
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel` (local or served).
        num_candidates: Candidates generated per turn.
        temperature: Sampling temperature of candidates after the first.
        max_new_tokens: Longest answer.
        context: What the prompt includes (``"history_sql"`` is HIE-SQL's input).
        examples: Optional ``db_id -> [(question, SQL), ...]`` demonstrations.
        linking: Schema-linking settings.
        seed: Seed for sampled candidates.
    """

    def __init__(
        self,
        chat_model: ChatModel,
        num_candidates: int = 1,
        temperature: float = 0.7,
        max_new_tokens: int = 128,
        context: ContextMode = "history_sql",
        examples: dict[str, Sequence[tuple[str, str]]] | None = None,
        linking: LinkingConfig | None = None,
        seed: int = 0,
    ) -> None:
        if num_candidates < 1:
            raise HieSqlConfigError(f"num_candidates must be >= 1, got {num_candidates}")
        self.chat_model = chat_model
        self.num_candidates = num_candidates
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.context = context
        self.examples = examples or {}
        self.linking = linking or LinkingConfig()
        self.seed = seed

    def predict_turn(
        self,
        schema: Schema,
        utterance: str,
        history: Sequence[str] = (),
        last_sql: str | None = None,
        db_path: str | Path | None = None,
    ) -> Prediction:
        """Predict the SQL of one turn.

        Args:
            schema: Database schema.
            utterance: Current question.
            history: Earlier questions, oldest first.
            last_sql: The previous turn's predicted SQL.
            db_path: Optional SQLite file (value linking and execution guard).

        Returns:
            The prediction.
        """
        graph = build_linking_graph(schema, utterance, history, last_sql, db_path, self.linking)
        conv = build_llm_conversation(
            schema, utterance, history, last_sql, graph, self.examples.get(schema.db_id, ()), self.context
        )
        texts = self.chat_model.generate([conv], max_new_tokens=self.max_new_tokens, temperature=0.0)
        for k in range(1, self.num_candidates):
            texts += self.chat_model.generate(
                [conv], max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed + k
            )
        candidates = [(extract_sql(t), 0.0) for t in texts]
        return rerank_candidates(candidates, schema, db_path, graph)
