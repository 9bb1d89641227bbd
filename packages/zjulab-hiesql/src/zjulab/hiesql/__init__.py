"""zjulab.hiesql: context-dependent text-to-SQL with history utterances and the last SQL (HIE-SQL).

Loaders for SParC/CoSQL, a Spider-family evaluator that agrees with the official scripts
(exact-set-match per component, question and interaction match, hardness, turns, execution),
a read-only SQLite sandbox, the schema-linking graph, the relation-aware encoder, bimodal NL–SQL
pretraining, a LoRA decoder with validity-guarded beam re-ranking, an LLM path, and an
interactive session.

The evaluator, the sandbox, schema linking and the LLM path (``LLMParser``, ``Text2SQLSession``
over a served model) need no torch. The neural parser and pretraining (``HieSqlParser``,
``HieSqlEncoder``, ``SQLDecoder``, ``BimodalPretrainer``...) are imported on first use and need
``pip install 'zjulab-hiesql[torch]'``.
"""

from typing import Any

from zjulab.hiesql.config import (
    DecoderConfig,
    EncoderConfig,
    LinkingConfig,
    ParserConfig,
    PretrainConfig,
    SandboxConfig,
)
from zjulab.hiesql.data import Interaction, Turn, load_interactions, read_turn_file, write_turn_file
from zjulab.hiesql.demo_db import build_demo_database
from zjulab.hiesql.encoder_input import EncoderInput, build_encoder_input
from zjulab.hiesql.errors import (
    HieSqlConfigError,
    HieSqlError,
    InvalidSQLError,
    ParserStoreError,
    SandboxError,
    SandboxLimitError,
    SandboxPermissionError,
    SchemaFileError,
    SQLParseError,
    UnknownDatabaseError,
)
from zjulab.hiesql.evaluation import EvaluationReport, Evaluator, TurnResult, evaluate_files, hardness
from zjulab.hiesql.linking import RELATIONS, LinkNode, SchemaLinkingGraph, build_linking_graph
from zjulab.hiesql.llm_parser import LLMParser
from zjulab.hiesql.prompting import build_llm_conversation, describe_schema
from zjulab.hiesql.reranking import Prediction, rerank_candidates
from zjulab.hiesql.sandbox import ExecutionResult, SQLiteSandbox
from zjulab.hiesql.schema import Schema, SchemaSet, load_tables, schema_from_sqlite
from zjulab.hiesql.session import SessionTurn, Text2SQLSession, TurnParser
from zjulab.hiesql.spider_sql import empty_sql, parse_spider_sql
from zjulab.hiesql.sql_tokenizer import tokenize_sql
from zjulab.hiesql.validity import Validity, check_sql, extract_sql

__version__ = "0.1.0"

#: Torch-backed names, imported on first access (``pip install 'zjulab-hiesql[torch]'``).
_TORCH_NAMES = {
    "BimodalPretrainer": "pretraining",
    "HieSqlEncoder": "encoder",
    "HieSqlParser": "parser",
    "RelationAwareAttention": "rat",
    "RelationAwareLayer": "rat",
    "SQLDecoder": "decoder",
    "collate_encoder_inputs": "encoder",
    "paired_texts": "pretraining",
}
TORCH_INSTALL = "pip install 'zjulab-hiesql[torch]'"


def __getattr__(name: str) -> Any:
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'zjulab.hiesql' has no attribute {name!r}")
    import importlib

    from zjulab.common.deps import require

    require("torch", TORCH_INSTALL, feature=name)
    require("transformers", TORCH_INSTALL, feature=name)
    value = getattr(importlib.import_module(f"zjulab.hiesql.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BimodalPretrainer",
    "DecoderConfig",
    "EncoderConfig",
    "EncoderInput",
    "EvaluationReport",
    "Evaluator",
    "ExecutionResult",
    "HieSqlConfigError",
    "HieSqlEncoder",
    "HieSqlError",
    "HieSqlParser",
    "Interaction",
    "InvalidSQLError",
    "LLMParser",
    "LinkNode",
    "LinkingConfig",
    "ParserConfig",
    "ParserStoreError",
    "Prediction",
    "PretrainConfig",
    "RELATIONS",
    "RelationAwareAttention",
    "RelationAwareLayer",
    "SQLDecoder",
    "SQLParseError",
    "SQLiteSandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxLimitError",
    "SandboxPermissionError",
    "Schema",
    "SchemaFileError",
    "SchemaLinkingGraph",
    "SchemaSet",
    "SessionTurn",
    "Text2SQLSession",
    "Turn",
    "TurnParser",
    "TurnResult",
    "UnknownDatabaseError",
    "Validity",
    "build_demo_database",
    "build_encoder_input",
    "build_linking_graph",
    "build_llm_conversation",
    "check_sql",
    "collate_encoder_inputs",
    "describe_schema",
    "empty_sql",
    "evaluate_files",
    "extract_sql",
    "hardness",
    "load_interactions",
    "load_tables",
    "paired_texts",
    "parse_spider_sql",
    "read_turn_file",
    "rerank_candidates",
    "schema_from_sqlite",
    "tokenize_sql",
    "write_turn_file",
]
