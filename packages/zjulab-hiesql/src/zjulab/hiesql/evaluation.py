"""Spider-family evaluation: exact-set-match per component, QM/IM, hardness, turns, execution.

The scores agree with the official SParC/CoSQL evaluation script (Spider's ``process_sql.py``
grammar with SParC's interaction-level aggregation) on the same files:

* values are ignored (``DISABLE_VALUE``) and ``DISTINCT`` is ignored (``DISABLE_DISTINCT``);
* table aliases are resolved to table names while parsing;
* a column linked by foreign keys is replaced by the first column of its key group when its
  table is in the query's FROM clause (sub-queries inside conditions are compared as parsed);
* a prediction that cannot be parsed becomes the empty query and is scored wrong;
* the literal word ``value`` in a prediction is read as ``1`` (as the official script does: a
  plain text replacement, which also rewrites ``value`` inside names and strings such as
  ``value_id`` or ``'Good value'``; ``value_placeholder="token"`` replaces only the bare
  placeholder word);
* hardness (easy/medium/hard/extra) is computed on the gold query.

Question match (QM) is the share of turns whose prediction matches exactly; interaction match
(IM) the share of interactions whose every turn matches. Both are taken over *every gold turn
and interaction*: a missing prediction is a wrong turn (``TurnResult.missing``), never a turn
left out of the denominator, and the report counts them. A prediction file whose ``db_id``
column disagrees with the gold file is refused (it is misaligned), naming the first such line.

Execution accuracy compares full results (no row cap; a result too large for the evaluation's
limits is an error, never a truncated comparison). A turn whose gold or predicted query cannot
be executed is reported on the turn (``exec_error``), scored 0, and the run goes on.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zjulab.hiesql.config import SandboxConfig
from zjulab.hiesql.data import read_turn_file_lines
from zjulab.hiesql.errors import (
    HieSqlConfigError,
    SandboxError,
    SchemaFileError,
    SQLParseError,
    UnknownDatabaseError,
)
from zjulab.hiesql.schema import Schema, SchemaSet, load_tables
from zjulab.hiesql.spider_sql import SQLDict, empty_sql, parse_spider_sql

logger = logging.getLogger(__name__)

__all__ = [
    "COMPONENTS",
    "HARDNESS_LEVELS",
    "ComponentScore",
    "EvaluationReport",
    "Evaluator",
    "TurnResult",
    "evaluate_files",
    "hardness",
]

COMPONENTS = (
    "select",
    "select(no AGG)",
    "where",
    "where(no OP)",
    "group(no Having)",
    "group",
    "order",
    "and/or",
    "IUEN",
    "keywords",
)
HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")
TURN_BUCKETS = ("1", "2", "3", "4", ">4")
_LIKE = 9
_IN = 8


@dataclass(frozen=True)
class ComponentScore:
    """Match of one component for one turn.

    Args:
        gold_total: Units in the gold query (0 when the component is absent).
        pred_total: Units in the prediction.
        matched: Units matched.
    """

    gold_total: int
    pred_total: int
    matched: int

    @property
    def correct(self) -> int:
        """1 when the totals agree and every unit matched, else 0 (the official all-or-nothing score)."""
        return int(self.pred_total == self.gold_total and self.matched == self.pred_total)


# --------------------------------------------------------------------------------------------
# hardness
# --------------------------------------------------------------------------------------------
def _conds(sql: SQLDict) -> list[Any]:
    return sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]


def _connectors(sql: SQLDict) -> list[Any]:
    return sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]


def _nested(sql: SQLDict) -> list[SQLDict]:
    out = [v for cu in _conds(sql) for v in (cu[3], cu[4]) if isinstance(v, dict)]
    out += [sql[op] for op in ("intersect", "except", "union") if sql[op] is not None]
    return out


def _first_is_set(items: Iterable[Any]) -> int:
    # The official "number of aggregations" counts items whose first field differs from 0: the
    # aggregate of a col unit, but the NOT flag of a condition and every and/or in HAVING.
    return sum(1 for it in items if it[0] != 0)


def hardness(sql: SQLDict) -> str:
    """The Spider hardness level of a parsed (not normalised) gold query.

    Args:
        sql: Output of :func:`~zjulab.hiesql.spider_sql.parse_spider_sql`.

    Returns:
        ``"easy"``, ``"medium"``, ``"hard"`` or ``"extra"``.
    """
    comp1 = sum(1 for k in ("where", "groupBy", "orderBy") if len(sql[k]) > 0)
    comp1 += sql["limit"] is not None
    if sql["from"]["table_units"]:
        comp1 += len(sql["from"]["table_units"]) - 1
    comp1 += sum(1 for c in _connectors(sql) if c == "or")
    comp1 += sum(1 for cu in _conds(sql) if cu[1] == _LIKE)
    comp2 = len(_nested(sql))
    aggs = _first_is_set(sql["select"][1]) + _first_is_set(sql["where"][::2]) + _first_is_set(sql["groupBy"])
    if sql["orderBy"]:
        keys = sql["orderBy"][1]
        aggs += _first_is_set([vu[1] for vu in keys if vu[1]] + [vu[2] for vu in keys if vu[2]])
    aggs += _first_is_set(sql["having"])
    others = int(aggs > 1) + int(len(sql["select"][1]) > 1) + int(len(sql["where"]) > 1)
    others += int(len(sql["groupBy"]) > 1)
    if comp1 <= 1 and others == 0 and comp2 == 0:
        return "easy"
    if (others <= 2 and comp1 <= 1 and comp2 == 0) or (comp1 <= 2 and others < 2 and comp2 == 0):
        return "medium"
    if (
        (others > 2 and comp1 <= 2 and comp2 == 0)
        or (2 < comp1 <= 3 and others <= 2 and comp2 == 0)
        or (comp1 <= 1 and others == 0 and comp2 <= 1)
    ):
        return "hard"
    return "extra"


# --------------------------------------------------------------------------------------------
# normalisation (values dropped, DISTINCT dropped, foreign keys folded)
# --------------------------------------------------------------------------------------------
def _drop_values(sql: SQLDict | None) -> SQLDict | None:
    if sql is None:
        return None

    def cond(c: list[Any]) -> list[Any]:
        return [
            x
            if k % 2
            else (
                x[0],
                x[1],
                x[2],
                _drop_values(x[3]) if isinstance(x[3], dict) else None,
                _drop_values(x[4]) if isinstance(x[4], dict) else None,
            )
            for k, x in enumerate(c)
        ]

    sql["from"]["conds"] = cond(sql["from"]["conds"])
    sql["where"] = cond(sql["where"])
    sql["having"] = cond(sql["having"])
    for op in ("intersect", "except", "union"):
        sql[op] = _drop_values(sql[op])
    return sql


def _fold_columns(sql: SQLDict | None, valid: set[str], fk: dict[str, str]) -> SQLDict | None:
    if sql is None:
        return None

    def cu(unit: Any) -> Any:
        if unit is None:
            return None
        col = unit[1]
        if col in fk and col in valid:
            col = fk[col]
        return (unit[0], col, None)

    def vu(unit: Any) -> Any:
        return None if unit is None else (unit[0], cu(unit[1]), cu(unit[2]))

    def cond(c: list[Any]) -> list[Any]:
        return [x if k % 2 else (x[0], x[1], vu(x[2]), x[3], x[4]) for k, x in enumerate(c)]

    sql["select"] = (None, [(agg, vu(v)) for agg, v in sql["select"][1]])
    sql["from"]["conds"] = cond(sql["from"]["conds"])
    sql["where"] = cond(sql["where"])
    sql["groupBy"] = [cu(c) for c in sql["groupBy"]]
    if sql["orderBy"]:
        sql["orderBy"] = (sql["orderBy"][0], [vu(v) for v in sql["orderBy"][1]])
    sql["having"] = cond(sql["having"])
    for op in ("intersect", "except", "union"):
        sql[op] = _fold_columns(sql[op], valid, fk)
    return sql


def _normalise(sql: SQLDict, schema: Schema, fk: dict[str, str]) -> SQLDict:
    # in place: callers hand over a freshly parsed structure (a deep copy cost 40% of the run)
    tables = {tu[1][2:-2] for tu in sql["from"]["table_units"] if tu[0] == "table_unit"}
    valid = {f"__{t}.{c}__" for t in tables for c in schema.tables.get(t, ())}
    _drop_values(sql)
    _fold_columns(sql, valid, fk)
    return sql


# --------------------------------------------------------------------------------------------
# component matching (on normalised queries)
# --------------------------------------------------------------------------------------------
def _multiset_hits(pred: Sequence[Any], gold: Sequence[Any]) -> int:
    pool = list(gold)
    hits = 0
    for unit in pred:
        if unit in pool:
            pool.remove(unit)
            hits += 1
    return hits


def _keywords(sql: SQLDict) -> set[str]:
    out = {name for name, key in (("where", "where"), ("group", "groupBy"), ("having", "having")) if sql[key]}
    if sql["orderBy"]:
        out |= {"order", sql["orderBy"][0]}
    if sql["limit"] is not None:
        out.add("limit")
    out |= {op for op in ("except", "union", "intersect") if sql[op] is not None}
    if "or" in _connectors(sql):
        out.add("or")
    conds = _conds(sql)
    if any(c[0] for c in conds):
        out.add("not")
    if any(c[1] == _IN for c in conds):
        out.add("in")
    if any(c[1] == _LIKE for c in conds):
        out.add("like")
    return out


def _components(pred: SQLDict, gold: SQLDict) -> dict[str, ComponentScore]:
    res: dict[str, ComponentScore] = {}
    ps, gs = pred["select"][1], gold["select"][1]
    res["select"] = ComponentScore(len(gs), len(ps), _multiset_hits(ps, gs))
    res["select(no AGG)"] = ComponentScore(
        len(gs), len(ps), _multiset_hits([u[1] for u in ps], [u[1] for u in gs])
    )
    pw, gw = pred["where"][::2], gold["where"][::2]
    res["where"] = ComponentScore(len(gw), len(pw), _multiset_hits(pw, gw))
    res["where(no OP)"] = ComponentScore(
        len(gw), len(pw), _multiset_hits([u[2] for u in pw], [u[2] for u in gw])
    )

    def bare(col: str) -> str:  # the official group-by check compares the text after the first dot
        return col.split(".")[1] if "." in col else col

    pg, gg = [u[1] for u in pred["groupBy"]], [u[1] for u in gold["groupBy"]]
    res["group(no Having)"] = ComponentScore(
        len(gg), len(pg), _multiset_hits([bare(c) for c in pg], [bare(c) for c in gg])
    )
    p_has, g_has = int(bool(pg)), int(bool(gg))
    res["group"] = ComponentScore(
        g_has, p_has, int(p_has == g_has == 1 and pg == gg and pred["having"] == gold["having"])
    )
    p_ord, g_ord = int(bool(pred["orderBy"])), int(bool(gold["orderBy"]))
    same_limit = (pred["limit"] is None) == (gold["limit"] is None)
    res["order"] = ComponentScore(
        g_ord, p_ord, int(bool(g_ord and pred["orderBy"] == gold["orderBy"] and same_limit))
    )
    pao, gao = set(pred["where"][1::2]), set(gold["where"][1::2])
    # The official helper returns (len(pred), len(gold)) in the (gold, pred) slots: kept as is.
    res["and/or"] = ComponentScore(1, 1, 1) if pao == gao else ComponentScore(len(pao), len(gao), 0)
    g_tot = p_tot = hit = 0
    for op in ("intersect", "except", "union"):
        p_sub, g_sub = pred[op], gold[op]
        p_tot += p_sub is not None
        g_tot += g_sub is not None
        if p_sub is not None and g_sub is not None:
            hit += _exact(p_sub, g_sub)[0]
    res["IUEN"] = ComponentScore(g_tot, p_tot, hit)
    pk, gk = _keywords(pred), _keywords(gold)
    res["keywords"] = ComponentScore(len(gk), len(pk), len(pk & gk))
    return res


def _table_key(unit: Any) -> tuple[str, str]:
    return (unit[0], repr(unit[1]))


def _exact(pred: SQLDict, gold: SQLDict) -> tuple[int, dict[str, ComponentScore]]:
    comps = _components(pred, gold)
    if any(c.correct != 1 for c in comps.values()):
        return 0, comps
    if gold["from"]["table_units"]:
        g = Counter(_table_key(u) for u in gold["from"]["table_units"])
        p = Counter(_table_key(u) for u in pred["from"]["table_units"])
        return int(g == p), comps
    return 1, comps


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnResult:
    """Scores of one predicted turn.

    Args:
        interaction: Index of the interaction.
        turn: Index of the turn inside the interaction (0-based).
        db_id: Database of the turn.
        gold: Gold SQL.
        pred: Predicted SQL.
        hardness: Hardness level of the gold query.
        exact: 1 when the prediction matches exactly, else 0.
        components: Per-component match.
        parsed: Whether the prediction could be parsed.
        execution: 1/0 when execution was checked, else None.
        missing: The prediction file had no prediction for this gold turn (scored wrong).
        exec_error: Why execution could not be compared ("" when it could).
        gold_error: Why the gold query could not be parsed (the turn is then scored wrong,
            with hardness ``"unknown"``), else "".
    """

    interaction: int
    turn: int
    db_id: str
    gold: str
    pred: str
    hardness: str
    exact: int
    components: dict[str, ComponentScore]
    parsed: bool
    execution: int | None = None
    missing: bool = False
    exec_error: str = ""
    gold_error: str = ""


def _summary(ts: Sequence[TurnResult]) -> dict[str, float]:
    row: dict[str, float] = {
        "count": float(len(ts)),
        "exact": sum(t.exact for t in ts) / len(ts) if ts else 0.0,
    }
    ex = [t.execution for t in ts if t.execution is not None]
    if ex:
        row["exec"] = sum(ex) / len(ts)
    return row


@dataclass
class EvaluationReport:
    """Aggregated scores with the per-turn results.

    Args:
        turns: Every scored turn.
        n_interactions: Number of interactions scored.
        interaction_exact: Interactions whose every turn matched.
        interaction_exec: Interactions whose every turn executed correctly (None without databases).
    """

    turns: list[TurnResult] = field(default_factory=list)
    n_interactions: int = 0
    interaction_exact: int = 0
    interaction_exec: int | None = None
    missing_interactions: int = 0
    extra_interactions: int = 0
    extra_turns: int = 0

    @property
    def missing_turns(self) -> int:
        """Gold turns without a prediction (each scored wrong)."""
        return sum(1 for t in self.turns if t.missing)

    @property
    def gold_errors(self) -> int:
        """Turns whose gold query could not be parsed (scored wrong)."""
        return sum(1 for t in self.turns if t.gold_error)

    @property
    def execution_errors(self) -> int:
        """Turns whose gold or predicted query could not be executed or compared."""
        return sum(1 for t in self.turns if t.exec_error)

    @property
    def complete(self) -> bool:
        """Every gold turn had a prediction and nothing extra was predicted."""
        return not (
            self.missing_turns or self.missing_interactions or self.extra_interactions or self.extra_turns
        )

    @property
    def question_match(self) -> float:
        """QM: share of turns matched exactly."""
        return sum(t.exact for t in self.turns) / len(self.turns) if self.turns else 0.0

    @property
    def interaction_match(self) -> float:
        """IM: share of interactions with every turn matched."""
        return self.interaction_exact / self.n_interactions if self.n_interactions else 0.0

    @property
    def execution_accuracy(self) -> float | None:
        """Share of gold turns whose execution result matched (None when not checked)."""
        checked = [t.execution for t in self.turns if t.execution is not None]
        return sum(checked) / len(self.turns) if checked else None

    @property
    def parse_failures(self) -> int:
        """Number of predictions that could not be parsed (scored wrong)."""
        return sum(1 for t in self.turns if not t.parsed and not t.missing and not t.gold_error)

    def _select(self, level: str) -> list[TurnResult]:
        return self.turns if level == "all" else [t for t in self.turns if t.hardness == level]

    def by_level(self) -> dict[str, dict[str, float]]:
        """``level -> {count, exact, exec}`` for easy/medium/hard/extra/all."""
        out: dict[str, dict[str, float]] = {}
        for level in (*HARDNESS_LEVELS, "all"):
            out[level] = _summary(self._select(level))
        return out

    def by_turn(self) -> dict[str, dict[str, float]]:
        """``"1".."4", ">4" -> {count, exact, exec}`` by turn position."""
        out: dict[str, dict[str, float]] = {}
        for bucket in TURN_BUCKETS:
            out[bucket] = _summary(
                [t for t in self.turns if (str(t.turn + 1) if t.turn < 4 else ">4") == bucket]
            )
        return out

    def partial(self, level: str = "all") -> dict[str, dict[str, float]]:
        """Per-component accuracy, recall and F1 for one hardness level (or ``"all"``).

        Accuracy averages the component score over turns whose prediction has the component,
        recall over turns whose gold has it; F1 combines the two (1 when both are 0), as the
        official script reports them.
        """
        ts = self._select(level)
        out: dict[str, dict[str, float]] = {}
        for name in COMPONENTS:
            acc_n = sum(1 for t in ts if t.components[name].pred_total > 0)
            rec_n = sum(1 for t in ts if t.components[name].gold_total > 0)
            acc_s = sum(t.components[name].correct for t in ts if t.components[name].pred_total > 0)
            rec_s = sum(t.components[name].correct for t in ts if t.components[name].gold_total > 0)
            acc = acc_s / acc_n if acc_n else 0.0
            rec = rec_s / rec_n if rec_n else 0.0
            f1 = 1.0 if acc == 0 and rec == 0 else 2.0 * acc * rec / (acc + rec)
            out[name] = {"acc": acc, "rec": rec, "f1": f1}
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-turn rows)."""
        return {
            "question_match": self.question_match,
            "interaction_match": self.interaction_match,
            "execution_accuracy": self.execution_accuracy,
            "n_turns": len(self.turns),
            "n_interactions": self.n_interactions,
            "parse_failures": self.parse_failures,
            "missing_turns": self.missing_turns,
            "missing_interactions": self.missing_interactions,
            "extra_turns": self.extra_turns,
            "extra_interactions": self.extra_interactions,
            "execution_errors": self.execution_errors,
            "gold_errors": self.gold_errors,
            "by_level": self.by_level(),
            "by_turn": self.by_turn(),
            "partial": {lv: self.partial(lv) for lv in (*HARDNESS_LEVELS, "all")},
        }

    def format_table(self) -> str:
        """A plain-text table: QM by hardness and by turn, IM, and partial F1 over all turns."""
        lines = []
        lv = self.by_level()
        head = f"{'':14}" + "".join(f"{k:>9}" for k in (*HARDNESS_LEVELS, "all"))
        lines.append(head)
        lines.append(
            f"{'count':14}" + "".join(f"{int(lv[k]['count']):>9d}" for k in (*HARDNESS_LEVELS, "all"))
        )
        lines.append(
            f"{'QM (exact)':14}" + "".join(f"{lv[k]['exact']:>9.3f}" for k in (*HARDNESS_LEVELS, "all"))
        )
        if self.execution_accuracy is not None:
            lines.append(
                f"{'execution':14}"
                + "".join(f"{lv[k].get('exec', 0.0):>9.3f}" for k in (*HARDNESS_LEVELS, "all"))
            )
        tb = self.by_turn()
        lines.append("")
        lines.append(f"{'turn':14}" + "".join(f"{k:>9}" for k in TURN_BUCKETS))
        lines.append(f"{'count':14}" + "".join(f"{int(tb[k]['count']):>9d}" for k in TURN_BUCKETS))
        lines.append(f"{'QM (exact)':14}" + "".join(f"{tb[k]['exact']:>9.3f}" for k in TURN_BUCKETS))
        lines.append("")
        lines.append(
            f"QM = {self.question_match:.4f}  IM = {self.interaction_match:.4f}  "
            f"({len(self.turns)} turns, {self.n_interactions} interactions, {self.parse_failures} unparsable)"
        )
        if not self.complete:
            lines.append(
                f"MISSING: {self.missing_turns} gold turns ({self.missing_interactions} whole interactions) had no "
                f"prediction and are scored wrong; {self.extra_turns} extra predicted turns and "
                f"{self.extra_interactions} extra interactions were ignored"
            )
        if self.gold_errors:
            lines.append(f"GOLD: {self.gold_errors} gold queries could not be parsed (scored wrong)")
        if self.execution_errors:
            lines.append(
                f"EXECUTION: {self.execution_errors} turns could not be executed or compared (scored 0)"
            )
        part = self.partial("all")
        lines.append("")
        lines.append(f"{'component (all)':18}{'acc':>8}{'rec':>8}{'f1':>8}")
        for name in COMPONENTS:
            p = part[name]
            lines.append(f"{name:18}{p['acc']:>8.3f}{p['rec']:>8.3f}{p['f1']:>8.3f}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# evaluator
# --------------------------------------------------------------------------------------------
_NO_COMPONENTS = {name: ComponentScore(0, 0, 0) for name in COMPONENTS}
_VALUE_WORD = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`)|\bvalue\b""", re.I)


def _replace_value_token(sql: str) -> str:
    # the bare placeholder word only: not inside quoted strings or names, not in value_id
    return _VALUE_WORD.sub(lambda m: m.group(1) or "1", sql)


#: Limits of execution accuracy: full results, a generous time limit (gold queries of large
#: databases take seconds), results up to 1 GB of Python memory and values up to 100 MB; larger
#: is an error, never cut. In-process (thousands of short queries; the official script runs them
#: unsandboxed): every layer of the sandbox but the hard time bound, which ``--isolate`` adds.
EVAL_SANDBOX = SandboxConfig(
    timeout_s=30.0,
    max_rows=10**9,
    max_bytes=10**9,
    max_cell_bytes=10**8,
    on_row_limit="raise",
    isolation="in_process",
)


class Evaluator:
    """Scores predicted SQL against gold SQL over a set of schemas.

    Args:
        schemas: ``db_id`` -> schema (e.g. from :func:`~zjulab.hiesql.schema.load_tables`).
        databases: Optional ``db_id`` -> SQLite path (or a directory holding
            ``DB/DB.sqlite``) for execution accuracy.
        replace_value_placeholder: Read the word ``value`` in predictions as ``1``.
        sandbox_config: Limits for execution (default :data:`EVAL_SANDBOX`: full results,
            30 s per query). A result over ``max_rows``/``max_bytes`` is an execution error.
        value_placeholder: ``"official"`` replaces the text ``value`` everywhere (the
            official script, kept for agreement); ``"token"`` replaces only the bare word.
    """

    def __init__(
        self,
        schemas: SchemaSet | dict[str, Schema],
        databases: dict[str, str | Path] | str | Path | None = None,
        replace_value_placeholder: bool = True,
        sandbox_config: SandboxConfig | None = None,
        value_placeholder: Literal["official", "token"] = "official",
    ) -> None:
        if value_placeholder not in ("official", "token"):
            raise HieSqlConfigError(
                f"value_placeholder must be 'official' or 'token', got {value_placeholder!r}"
            )
        self.schemas = schemas if isinstance(schemas, SchemaSet) else SchemaSet(schemas)
        self.databases = databases
        self.replace_value_placeholder = replace_value_placeholder
        self.value_placeholder = value_placeholder
        self.sandbox_config = sandbox_config or EVAL_SANDBOX
        if self.sandbox_config.on_row_limit != "raise":
            self.sandbox_config = SandboxConfig(**{**self.sandbox_config.__dict__, "on_row_limit": "raise"})
        self._fk: dict[str, dict[str, str]] = {}
        self._boxes: dict[str, Any] = {}

    def _fk_map(self, db_id: str) -> dict[str, str]:
        if db_id not in self._fk:
            self._fk[db_id] = self.schemas[db_id].foreign_key_map()
        return self._fk[db_id]

    def _db_path(self, db_id: str) -> Path | None:
        if self.databases is None:
            return None
        if isinstance(self.databases, dict):
            p = self.databases.get(db_id)
            return Path(p) if p is not None else None
        return Path(self.databases) / db_id / f"{db_id}.sqlite"

    def _placeholder(self, pred: str) -> str:
        if not self.replace_value_placeholder:
            return pred
        return (
            pred.replace("value", "1") if self.value_placeholder == "official" else _replace_value_token(pred)
        )

    def match(self, pred: str, gold: str, db_id: str) -> tuple[int, dict[str, ComponentScore], str, bool]:
        """Exact-set-match of one prediction.

        Args:
            pred: Predicted SQL (unparsable text is scored wrong, never raised).
            gold: Gold SQL.
            db_id: Database of both.

        Returns:
            ``(exact, components, hardness, parsed)``.

        Raises:
            UnknownDatabaseError: When ``db_id`` is not among the schemas.
            SQLParseError: When the gold SQL cannot be parsed.
        """
        schema = self.schemas[db_id]
        g_raw = parse_spider_sql(gold, schema)
        level = hardness(g_raw)
        text = self._placeholder(pred)
        try:
            p_raw = parse_spider_sql(text, schema)
            parsed = True
        except SQLParseError as exc:
            logger.debug("unparsable prediction scored wrong: %s", exc)
            p_raw, parsed = empty_sql(), False
        fk = self._fk_map(db_id)
        exact, comps = _exact(_normalise(p_raw, schema, fk), _normalise(g_raw, schema, fk))
        return exact, comps, level, parsed

    def _sandbox(self, db_id: str, path: Path) -> Any:
        box = self._boxes.get(db_id)
        if box is None:
            from zjulab.hiesql.sandbox import SQLiteSandbox

            box = self._boxes[db_id] = SQLiteSandbox(path, self.sandbox_config)
        return box

    def close(self) -> None:
        """Close the databases opened for execution accuracy."""
        for box in self._boxes.values():
            box.close()
        self._boxes.clear()

    def execution_match(self, pred: str, gold: str, db_id: str) -> tuple[int | None, str]:
        """Execution match of one prediction: ``(1 or 0, "")``, ``(0, why)`` or ``(None, "")`` without a database.

        Never raises for a query that fails: a gold or predicted query that cannot be executed
        (missing database, SQLite error, time or size limit) gives ``(0, reason)``.
        """
        path = self._db_path(db_id)
        if path is None:
            return None, ""
        if not path.is_file():
            return 0, f"database not found: {path}"
        try:
            box = self._sandbox(db_id, path)
        except (SchemaFileError, SandboxError) as exc:
            return 0, f"database: {exc}"
        schema = self.schemas[db_id]
        fk = self._fk_map(db_id)
        text = self._placeholder(pred)
        try:
            g_rows = box.execute(gold).rows
        except SandboxError as exc:
            return 0, f"gold query failed: {exc}"
        try:
            p_rows = box.execute(text).rows
        except SandboxError as exc:
            return 0, f"prediction failed: {exc}"
        try:
            p_sql = _normalise(parse_spider_sql(text, schema), schema, fk)
        except SQLParseError:
            p_sql = _normalise(empty_sql(), schema, fk)
        try:
            g_sql = _normalise(parse_spider_sql(gold, schema), schema, fk)
        except SQLParseError as exc:
            return 0, f"gold query cannot be parsed: {exc}"
        try:
            return int(_column_map(p_rows, p_sql) == _column_map(g_rows, g_sql)), ""
        except IndexError:
            return 0, "results have fewer columns than the SELECT clause"

    def _execution(self, pred: str, gold: str, db_id: str) -> int | None:
        return self.execution_match(pred, gold, db_id)[0]

    def evaluate(
        self,
        gold: Sequence[Sequence[tuple[str, str]]],
        pred: Sequence[Sequence[str] | Sequence[tuple[str, str]]],
        execution: bool | Literal["auto"] = "auto",
    ) -> EvaluationReport:
        """Score predicted interactions against gold interactions.

        Interactions and turns are paired in order. Every gold turn is scored: one without a
        prediction counts as wrong (``missing``), and extra predicted turns or interactions
        are counted in the report (and ignored), never silently dropped from the score.

        Args:
            gold: One list of ``(sql, db_id)`` per interaction.
            pred: One list per interaction of SQL strings or ``(sql, db_id)`` pairs (a
                ``db_id`` that differs from the gold turn's raises :class:`SchemaFileError`).
            execution: Check execution results; ``"auto"`` checks when databases were given.

        Returns:
            The report.
        """
        do_exec = (self.databases is not None) if execution == "auto" else bool(execution)
        report = EvaluationReport()
        if len(gold) != len(pred):
            logger.warning(
                "%d gold vs %d predicted interactions: missing ones are scored wrong", len(gold), len(pred)
            )
        report.extra_interactions = max(0, len(pred) - len(gold))
        exec_all = 0
        try:
            for i, g_inter in enumerate(gold):
                p_inter = pred[i] if i < len(pred) else []
                if i >= len(pred):
                    report.missing_interactions += 1
                elif len(g_inter) != len(p_inter):
                    logger.warning(
                        "interaction %d: %d gold vs %d predicted turns", i, len(g_inter), len(p_inter)
                    )
                report.extra_turns += max(0, len(p_inter) - len(g_inter))
                all_exact, all_exec = True, True
                for j, g in enumerate(g_inter):
                    g_sql, db_id = g
                    missing = j >= len(p_inter)
                    p = "" if missing else p_inter[j]
                    p_sql = p if isinstance(p, str) else p[0]
                    if not isinstance(p, str) and len(p) > 1 and p[1] and p[1] != db_id:
                        raise SchemaFileError(
                            f"prediction of interaction {i} turn {j} is for database {p[1]!r} but the gold "
                            f"turn is for {db_id!r}: predictions and gold are not aligned"
                        )
                    gold_error = ""
                    try:
                        exact, comps, level, parsed = self.match(p_sql, g_sql, db_id)
                    except SQLParseError as exc:
                        logger.warning("interaction %d turn %d: %s", i, j, exc)
                        exact, comps, level, parsed, gold_error = (
                            0,
                            _NO_COMPONENTS,
                            "unknown",
                            False,
                            str(exc),
                        )
                    ex, why = (None, "")
                    if do_exec:
                        ex, why = self.execution_match(p_sql, g_sql, db_id) if not missing else (0, "")
                    report.turns.append(
                        TurnResult(
                            i,
                            j,
                            db_id,
                            g_sql,
                            p_sql,
                            level,
                            exact,
                            comps,
                            parsed and not missing,
                            ex,
                            missing,
                            why,
                            gold_error,
                        )
                    )
                    all_exact &= exact == 1
                    all_exec &= ex == 1
                report.n_interactions += 1
                report.interaction_exact += int(all_exact)
                exec_all += int(all_exec)
        finally:
            self.close()
        if do_exec:
            report.interaction_exec = exec_all
        return report


def _column_map(rows: Sequence[Sequence[Any]], sql: SQLDict) -> dict[Any, list[Any]]:
    # Official execution check: one column of values per SELECT item, keyed by the item's columns.
    out: dict[Any, list[Any]] = {}
    for k, (_agg, vu) in enumerate(sql["select"][1]):
        key = tuple(vu[1]) if not vu[2] else (vu[0], tuple(vu[1]), tuple(vu[2]))
        out[key] = [r[k] for r in rows]
    return out


def evaluate_files(
    gold_path: str | Path,
    pred_path: str | Path,
    tables_path: str | Path,
    databases: str | Path | None = None,
    *,
    sandbox_config: SandboxConfig | None = None,
    value_placeholder: Literal["official", "token"] = "official",
) -> EvaluationReport:
    """Evaluate a prediction file against a gold file (the official command-line use).

    Args:
        gold_path: Gold file (``SQL<TAB>db_id`` per turn, blank line between interactions).
        pred_path: Prediction file in the same layout (the ``db_id`` column may be missing;
            where present it must agree with the gold file, turn by turn).
        tables_path: ``tables.json`` with every database named in the gold file.
        databases: Optional directory with ``DB/DB.sqlite`` files for execution accuracy.
        sandbox_config: Limits of execution (default :data:`EVAL_SANDBOX`).
        value_placeholder: See :class:`Evaluator`.

    Returns:
        The report (check :attr:`EvaluationReport.complete` for missing predictions).

    Raises:
        SchemaFileError: When a file is missing or malformed, or the prediction file is
            misaligned with the gold file (a ``db_id`` differs; the first such line is named).
        UnknownDatabaseError: When the gold names a database absent from ``tables_path``.
    """
    gold = read_turn_file_lines(gold_path)
    pred = read_turn_file_lines(pred_path)
    for k, inter in enumerate(gold):
        for sql, db, line in inter:
            if not db:
                raise SchemaFileError(
                    f"{gold_path}:{line}: interaction {k} has a turn without db_id: {sql!r}"
                )
    for k, (g_inter, p_inter) in enumerate(zip(gold, pred)):
        for (_g, g_db, g_line), (_p, p_db, p_line) in zip(g_inter, p_inter):
            if p_db and p_db != g_db:
                raise SchemaFileError(
                    f"{pred_path}:{p_line}: prediction for database {p_db!r} but {gold_path}:{g_line} is a turn "
                    f"of {g_db!r} (interaction {k}): the files are not aligned (CoSQL's dev.json and "
                    "dev_gold.txt list dialogues in different orders; `predict --gold-out` writes a matching gold file)"
                )
    schemas = load_tables(tables_path)
    for inter in gold:
        for _sql, db, line in inter:
            if db not in schemas:
                raise UnknownDatabaseError(f"{gold_path}:{line}: unknown db_id {db!r} (not in {tables_path})")
    ev = Evaluator(
        schemas, databases=databases, sandbox_config=sandbox_config, value_placeholder=value_placeholder
    )
    return ev.evaluate(
        [[(sql, db) for sql, db, _ in inter] for inter in gold], [[p for p, _, _ in inter] for inter in pred]
    )
