"""Turn-by-turn agreement with the official Spider exact-match script on SParC/CoSQL dev, and speed.

The official script is not part of this package: pass a checkout of taoyds/spider (the folder
holding ``evaluation.py`` and ``process_sql.py``). Its functions are imported and called as its
``evaluate()`` calls them for ``--etype match`` (parse, value and column rebuild with the
foreign-key map of ``tables.json``, ``Evaluator.eval_exact_match``), with two adaptations:

* schemas come from ``tables.json`` (the databases are not distributed): each table maps to
  its lower-cased original column names, which is what ``get_schema`` reads from a SQLite file;
* ``nltk.word_tokenize`` needs the ``punkt`` sentence model, not available offline; the script's
  ``word_tokenize`` is replaced by NLTK's word tokenizer alone (``NLTKWordTokenizer``), which is
  what ``word_tokenize`` applies to each sentence. A query is one sentence unless punkt splits
  it, so the tokens are the same on these files.

As the SParC script does, ``value`` in a prediction is read as ``1`` on both sides. A prediction
the official parser cannot read is scored against an empty query, as the script does. Turns whose
gold SQL the official parser cannot read (the script would stop) are counted apart.

    python benchmarks/bench_official.py --spider-dir PATH/TO/spider [--data ../../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from zjulab.hiesql import Evaluator, load_tables, read_turn_file
from zjulab.hiesql.spider_sql import empty_sql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import find_data  # noqa: E402
from perturb import perturb_text  # noqa: E402


def _official(spider_dir: Path) -> tuple[Any, Any]:
    from nltk.tokenize import NLTKWordTokenizer

    sys.path.insert(0, str(spider_dir))
    psql = importlib.import_module("process_sql")
    word = NLTKWordTokenizer()
    psql.word_tokenize = word.tokenize  # see the module docstring
    ev = importlib.import_module("evaluation")
    return psql, ev


def _official_schemas(tables: Path, psql: Any) -> dict[str, Any]:
    out = {}
    for entry in json.loads(tables.read_text(encoding="utf-8")):
        names = entry["table_names_original"]
        cols: dict[str, list[str]] = {t.lower(): [] for t in names}
        for t_idx, col in entry["column_names_original"]:
            if t_idx >= 0:
                cols[names[t_idx].lower()].append(col.lower())
        out[entry["db_id"]] = psql.Schema(cols)
    return out


def _empty() -> dict[str, Any]:
    # what the official script scores an unparsable prediction against (its select is a list)
    return {**empty_sql(), "select": [False, []]}


def _official_turn(ev: Any, psql: Any, schema: Any, kmap: Any, pred: str, gold: str) -> tuple[int, str]:
    evaluator = ev.Evaluator()
    g_sql = psql.get_sql(schema, gold)
    level = evaluator.eval_hardness(g_sql)
    try:
        p_sql = psql.get_sql(schema, pred.replace("value", "1"))
    except Exception:  # the official script catches everything here too
        p_sql = _empty()
    g_valid = ev.build_valid_col_units(g_sql["from"]["table_units"], schema)
    g_sql = ev.rebuild_sql_col(g_valid, ev.rebuild_sql_val(g_sql), kmap)
    p_valid = ev.build_valid_col_units(p_sql["from"]["table_units"], schema)
    p_sql = ev.rebuild_sql_col(p_valid, ev.rebuild_sql_val(p_sql), kmap)
    return int(evaluator.eval_exact_match(p_sql, g_sql)), level


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spider-dir", required=True, type=Path, help="checkout of taoyds/spider")
    ap.add_argument("--data", default=None)
    ap.add_argument("--quick", action="store_true", help="SParC only, gold and one perturbation")
    args = ap.parse_args()
    data = find_data(args.data)
    psql, ev = _official(args.spider_dir)
    sets = ["sparc"] if args.quick else ["sparc", "cosql"]
    seeds = [1] if args.quick else [1, 2, 3]
    print(
        f"{'set':6} {'pred':10} {'turns':>6} {'gold unreadable':>15} {'same verdict':>12} "
        f"{'same hardness':>13} {'EM official':>11} {'EM ours':>8} {'x official':>10}"
    )
    for name in sets:
        tables = data / name / "tables.json"
        gold_text = (data / name / "dev_gold.txt").read_text(encoding="utf-8").rstrip("\n") + "\n\n"
        gold_turns = [t for inter in _turns(gold_text) for t in inter]
        schemas = _official_schemas(tables, psql)
        kmaps = ev.build_foreign_key_map_from_json(str(tables))
        ours = Evaluator(load_tables(tables))
        runs = [("gold", gold_text)] + [(f"perturb-{s}", perturb_text(gold_text, s)) for s in seeds]
        for label, pred_text in runs:
            pred_turns = [t for inter in _turns(pred_text) for t in inter]
            assert len(pred_turns) == len(gold_turns)
            t0 = time.perf_counter()
            theirs: list[tuple[int, str] | None] = []
            for (p, _), (g, db) in zip(pred_turns, gold_turns, strict=True):
                try:
                    theirs.append(_official_turn(ev, psql, schemas[db], kmaps[db], p, g))
                except Exception:  # the gold query itself: the official script would stop here
                    theirs.append(None)
            t_official = time.perf_counter() - t0
            t0 = time.perf_counter()
            mine = []
            for (p, _), (g, db) in zip(pred_turns, gold_turns, strict=True):
                try:
                    exact, _c, level, _parsed = ours.match(p, g, db)
                    mine.append((exact, level))
                except Exception:  # gold unparsable: reported per turn by evaluate()
                    mine.append(None)
            t_ours = time.perf_counter() - t0
            both = [(a, b) for a, b in zip(theirs, mine, strict=True) if a is not None and b is not None]
            unreadable = sum(a is None for a in theirs)
            assert all((a is None) == (b is None) for a, b in zip(theirs, mine, strict=True))
            same = sum(a[0] == b[0] for a, b in both)
            same_level = sum(a[1] == b[1] for a, b in both)
            em_o = sum(a[0] for a, _ in both) / len(both)
            em_m = sum(b[0] for _, b in both) / len(both)
            print(
                f"{name:6} {label:10} {len(gold_turns):>6} {unreadable:>15} {same:>6}/{len(both):<5} "
                f"{same_level:>7}/{len(both):<5} {em_o:>11.4f} {em_m:>8.4f} {t_official / t_ours:>10.1f}"
            )
            for (a, b), (p, _), (g, db) in zip(
                zip(theirs, mine, strict=True), pred_turns, gold_turns, strict=True
            ):
                if a is not None and b is not None and a != b:
                    print(f"  differs on {db}: official {a}, ours {b}\n    pred {p}\n    gold {g}")


def _turns(text: str) -> list[list[tuple[str, str]]]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
    try:
        return read_turn_file(f.name)
    finally:
        Path(f.name).unlink()


if __name__ == "__main__":
    main()
