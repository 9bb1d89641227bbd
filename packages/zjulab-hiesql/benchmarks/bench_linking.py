"""Schema-linking recall/precision on SParC and CoSQL dev, and the pruned-schema prompt.

For every dev turn, the gold items are the tables and ``table.column`` pairs its gold SQL uses
(read with the evaluator's Spider parser, aliases resolved). The linked items are those
``SchemaLinkingGraph.linked_schema()`` reaches from:

* ``utterance``: the current question only;
* ``+history``: plus the earlier questions;
* ``+gold SQL``: plus the previous turn's gold SQL (HIE-SQL's teacher-forced input);
* ``+pred SQL``: plus a *predicted* previous SQL. No trained parser's predictions are shipped
  with the data, so the stand-in is the previous gold SQL perturbed by ``perturb.py`` (seed 1:
  a quarter dropped/swapped tokens, changed values, aliases, aggregates...).

No database values are used (the SParC/CoSQL databases are not distributed). Micro-averaged
recall and precision by turn position. Then the pruned schema of the LLM prompt
(``pruned_schema_ddl``) at several token budgets: schema tokens and the recall of gold items
that survive pruning (context ``+gold SQL``).

    python benchmarks/bench_linking.py [--data ../../shared/data] [--limit N]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from zjulab.hiesql import build_linking_graph, load_interactions, load_tables, parse_spider_sql
from zjulab.hiesql.errors import SQLParseError
from zjulab.hiesql.prompting import count_tokens, pruned_schema_ddl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import find_data  # noqa: E402
from perturb import perturb_sql  # noqa: E402


def _ids(node: object, out: set[str]) -> None:
    if isinstance(node, str):
        if node.startswith("__") and node.endswith("__") and node != "__all__":
            name = node[2:-2].lower()
            out.add(name)
            if "." in name:
                out.add(name.split(".", 1)[0])
    elif isinstance(node, dict):
        for v in node.values():
            _ids(v, out)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _ids(v, out)


def gold_items(sql: str, schema) -> set[str]:
    """Lower-cased ``table`` and ``table.column`` items of a gold query."""
    out: set[str] = set()
    _ids(parse_spider_sql(sql, schema), out)
    return out


def linked_items(graph) -> set[str]:
    return {k.lower() for k in graph.linked_schema()}


def ddl_items(ddl: str, schema) -> set[str]:
    out: set[str] = set()
    table = None
    for line in ddl.splitlines():
        m = re.match(r'CREATE TABLE "?(.+?)"? \(', line)
        if m:
            table = m.group(1).lower()
            out.add(table)
            continue
        m = re.match(r'\s+"?([^"]+?)"? (number|text)', line)
        if m and table:
            out.add(f"{table}.{m.group(1).lower()}")
    return out


def bucket(k: int) -> str:
    return str(k + 1) if k < 4 else ">4"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=0, help="interactions per set (0 = all)")
    args = ap.parse_args()
    data = find_data(args.data)
    budgets = [None, 400, 200, 100, 50]
    for name in ("sparc", "cosql"):
        schemas = load_tables(data / name / "tables.json")
        inters = load_interactions(data / name / "dev.json")
        if args.limit:
            inters = inters[: args.limit]
        rng = random.Random(1)
        stats: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # hit, gold, linked
        prune: dict[object, list[float]] = defaultdict(lambda: [0, 0, 0, 0])  # tokens, hit, gold, n
        t0 = time.perf_counter()
        n_turns = skipped = 0
        for inter in inters:
            schema = schemas[inter.db_id]
            history: list[str] = []
            prev_gold: str | None = None
            prev_pred: str | None = None
            for k, turn in enumerate(inter.turns):
                try:
                    gold = gold_items(turn.sql, schema)
                except SQLParseError:
                    skipped += 1
                    gold = None
                if gold:
                    n_turns += 1
                    contexts = {
                        "utterance": (turn.utterance, [], None),
                        "+history": (turn.utterance, history, None),
                        "+gold SQL": (turn.utterance, history, prev_gold),
                        "+pred SQL": (turn.utterance, history, prev_pred),
                    }
                    for label, (utt, hist, last) in contexts.items():
                        g = build_linking_graph(schema, utt, list(hist), last, None)
                        linked = linked_items(g)
                        for b in (bucket(k), "all"):
                            s = stats[(label, b)]
                            s[0] += len(linked & gold)
                            s[1] += len(gold)
                            s[2] += len(linked)
                        if label == "+gold SQL":
                            for budget in budgets:
                                ddl = pruned_schema_ddl(schema, g, budget)
                                kept = ddl_items(ddl, schema)
                                p = prune[budget]
                                p[0] += count_tokens(ddl)
                                p[1] += len(kept & gold)
                                p[2] += len(gold)
                                p[3] += 1
                history.append(turn.utterance)
                prev_gold = turn.sql
                prev_pred = perturb_sql(turn.sql, rng)
        dt = time.perf_counter() - t0
        print(f"\n{name} dev: {n_turns} turns scored ({skipped} gold queries unparsable), {dt:.0f}s")
        print(
            "| context | " + " | ".join(f"turn {b} R / P" for b in ("1", "2", "3", "4", ">4", "all")) + " |"
        )
        print("|---|" + "---:|" * 6)
        for label in ("utterance", "+history", "+gold SQL", "+pred SQL"):
            cells = []
            for b in ("1", "2", "3", "4", ">4", "all"):
                hit, gold_n, linked_n = stats[(label, b)]
                cells.append(f"{hit / gold_n:.3f} / {hit / linked_n:.3f}" if gold_n and linked_n else "-")
            print(f"| {label} | " + " | ".join(cells) + " |")
        print(
            "\n| schema budget (tokens) | mean schema tokens | saved vs full | gold-item recall of the pruned schema |"
        )
        print("|---|---:|---:|---:|")
        full = prune[None][0] / prune[None][3]
        for budget in budgets:
            tok, hit, gold_n, n = prune[budget]
            print(f"| {budget or 'full'} | {tok / n:.0f} | {1 - tok / n / full:.0%} | {hit / gold_n:.3f} |")


if __name__ == "__main__":
    main()
