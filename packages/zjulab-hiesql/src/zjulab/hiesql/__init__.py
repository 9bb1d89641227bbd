"""zjulab.hiesql: context-dependent text-to-SQL with history utterances and the last SQL (HIE-SQL)."""

from zjulab.hiesql.data import Interaction, Turn, load_interactions, read_turn_file, write_turn_file
from zjulab.hiesql.evaluation import EvaluationReport, Evaluator, evaluate_files, hardness
from zjulab.hiesql.schema import Schema, SchemaSet, load_tables, schema_from_sqlite
from zjulab.hiesql.spider_sql import parse_spider_sql
from zjulab.hiesql.sql_tokenizer import tokenize_sql

__version__ = "0.1.0"

__all__ = [
    "EvaluationReport",
    "Evaluator",
    "Interaction",
    "Schema",
    "SchemaSet",
    "Turn",
    "evaluate_files",
    "hardness",
    "load_interactions",
    "load_tables",
    "parse_spider_sql",
    "read_turn_file",
    "schema_from_sqlite",
    "tokenize_sql",
    "write_turn_file",
]
