"""Deterministic perturbation of a gold file into a prediction file (for evaluator checks).

Each turn is left alone, has a token dropped or two swapped, its ORDER direction flipped, an
aggregate changed, DISTINCT added, LIMIT dropped, values changed, an alias renamed, AND turned
into OR, INTERSECT into UNION (or garbage appended), the word ``value`` prepended, two WHERE
conditions reordered, or the text lower-cased — chosen by a seeded RNG.
"""

from __future__ import annotations

import random
import re
import sys


def perturb_sql(sql: str, rng: random.Random) -> str:
    """One perturbed copy of ``sql``."""
    r = rng.random()
    toks = sql.split()
    if r < 0.15:
        return sql
    if r < 0.30 and len(toks) > 3:
        k = rng.randrange(len(toks))
        return " ".join(toks[:k] + toks[k + 1 :])
    if r < 0.40 and len(toks) > 3:
        a, b = rng.randrange(len(toks)), rng.randrange(len(toks))
        toks[a], toks[b] = toks[b], toks[a]
        return " ".join(toks)
    if r < 0.48:
        return (
            re.sub(r"\bDESC\b", "ASC", sql, flags=re.I)
            if re.search("desc", sql, re.I)
            else sql.replace("ASC", "DESC")
        )
    if r < 0.55:
        return re.sub(r"(?i)\bcount\(", "max(", sql, count=1)
    if r < 0.60:
        return re.sub(r"(?i)select ", "SELECT DISTINCT ", sql, count=1)
    if r < 0.66:
        return re.sub(r"(?i)\s+limit\s+\d+", "", sql)
    if r < 0.72:
        return re.sub(r'"[^"]*"', '"zz"', re.sub(r"\b\d+\b", "7", sql))
    if r < 0.78:
        return re.sub(r"(?i)\bT1\b", "Q1", sql).replace("t1.", "Q1.")
    if r < 0.84:
        return re.sub(r"(?i)\bAND\b", "OR", sql, count=1)
    if r < 0.88:
        return re.sub(r"(?i)\bINTERSECT\b", "UNION", sql) if "INTERSECT" in sql.upper() else sql + " garbage"
    if r < 0.92:
        return "value " + sql
    if r < 0.96:
        m = re.search(r"(?i)where (.+?) and (.+?)($| group| order| limit)", sql)
        return sql if not m else sql[: m.start(1)] + m.group(2) + " AND " + m.group(1) + sql[m.end(2) :]
    return sql.lower()


def perturb_text(gold_text: str, seed: int) -> str:
    """Perturb every turn of a gold file's text; keeps the blank-line interaction layout."""
    rng = random.Random(seed)
    out = []
    for block in gold_text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        for ln in lines:
            sql, db = ln.split("\t")
            out.append(perturb_sql(sql, rng) + "\t" + db + "\n")
        out.append("\n")
    return "".join(out)


if __name__ == "__main__":
    src, dst, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        g.write(perturb_text(f.read(), seed))
