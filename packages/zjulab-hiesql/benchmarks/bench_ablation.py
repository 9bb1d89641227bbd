"""Context ablation on SParC/CoSQL dev: utterance only vs + history vs + history + last SQL (QM/IM).

No training set ships with the shared data and the machine has two shared CPU cores, so the
parser here is one that trains in seconds: a nearest-neighbour parser. Each dev database's
interactions are split in two (even positions train, odd positions test); a test turn gets the
SQL of the training turn of the same database whose context is most similar. The context vector
is the encoding of the utterance, plus (``history``) the mean encoding of earlier utterances,
plus (``history_sql``) the encoding of the last *predicted* SQL — the three inputs HIE-SQL
compares. Candidates then pass the validity guard, and the feedback loop of the last predicted SQL is
the same as the full parser's. Scores come from this package's evaluator (official scoring).

    python benchmarks/bench_ablation.py [--quick] [--encoder hashing|minilm] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.testing import HashingEncoder
from zjulab.hiesql import Evaluator, Interaction, load_interactions, load_tables
from zjulab.hiesql.reranking import Prediction, rerank_candidates
from zjulab.hiesql.schema import Schema

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import find_data  # noqa: E402


class NearestNeighbourParser:
    """Returns the SQL of the most similar training turn of the same database."""

    def __init__(
        self, encoder: Any, context: str, w_history: float = 0.5, w_sql: float = 0.7, top_k: int = 5
    ) -> None:
        self.enc = encoder
        self.context = context
        self.w_history = w_history
        self.w_sql = w_sql
        self.top_k = top_k
        self.keys: dict[str, np.ndarray] = {}
        self.sqls: dict[str, list[str]] = {}

    def _vec(self, utt: np.ndarray, hist: np.ndarray | None, sql: np.ndarray | None) -> np.ndarray:
        v = utt.copy()
        if self.context != "utterance" and hist is not None:
            v += self.w_history * hist
        if self.context == "history_sql" and sql is not None:
            v += self.w_sql * sql
        return v / (np.linalg.norm(v) + 1e-9)

    def fit(self, interactions: Sequence[Interaction]) -> None:
        texts = sorted(
            {t.utterance for i in interactions for t in i.turns}
            | {t.sql for i in interactions for t in i.turns}
        )
        emb = dict(zip(texts, self.enc.encode(texts)))
        rows: dict[str, list[np.ndarray]] = {}
        for inter in interactions:
            for k, turn in enumerate(inter.turns):
                hist = np.mean([emb[t.utterance] for t in inter.turns[:k]], axis=0) if k else None
                prev = emb[inter.turns[k - 1].sql] if k else None
                rows.setdefault(inter.db_id, []).append(self._vec(emb[turn.utterance], hist, prev))
                self.sqls.setdefault(inter.db_id, []).append(turn.sql)
        self.keys = {db: np.stack(v) for db, v in rows.items()}

    def predict_turn(
        self,
        schema: Schema,
        utterance: str,
        history: Sequence[str] = (),
        last_sql: str | None = None,
        db_path: Any = None,
    ) -> Prediction:
        vecs = self.enc.encode([utterance, *history, *([last_sql] if last_sql else [])])
        hist = vecs[1 : 1 + len(history)].mean(axis=0) if history else None
        sql = vecs[-1] if last_sql else None
        q = self._vec(vecs[0], hist, sql)
        if schema.db_id not in self.keys:
            return Prediction("", False)
        sims = self.keys[schema.db_id] @ q
        order = np.argsort(-sims)[: self.top_k]
        return rerank_candidates([(self.sqls[schema.db_id][i], float(sims[i])) for i in order], schema)


def split(inters: list[Interaction]) -> tuple[list[Interaction], list[Interaction]]:
    by_db: dict[str, list[Interaction]] = {}
    for i in inters:
        by_db.setdefault(i.db_id, []).append(i)
    train = [x for v in by_db.values() for x in v[0::2]]
    test = [x for v in by_db.values() for x in v[1::2]]
    return train, test


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="SParC only")
    ap.add_argument("--encoder", choices=["hashing", "minilm"], default="hashing")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    data = find_data(args.data)
    if args.encoder == "minilm":
        from zjulab.common.defaults import default_encoder

        encoder: Any = default_encoder(device="cpu")
    else:
        encoder = HashingEncoder(1024)
    print(f"encoder: {args.encoder}; split: even/odd interactions per database")
    print(
        f"{'set':6} {'context':12} {'test turns':>10} {'QM':>7} {'IM':>7} {'QM ratio':>9} {'fit+predict s':>14}"
    )
    for name in ["sparc"] if args.quick else ["sparc", "cosql"]:
        inters = load_interactions(data / name / "dev.json")
        schemas = load_tables(data / name / "tables.json")
        train, test = split(inters)
        base_qm = None
        for context in ("utterance", "history", "history_sql"):
            t0 = time.perf_counter()
            parser = NearestNeighbourParser(encoder, context)
            parser.fit(train)
            preds = []
            for inter in test:
                last = None
                out = []
                for k, turn in enumerate(inter.turns):
                    p = parser.predict_turn(
                        schemas[inter.db_id], turn.utterance, [t.utterance for t in inter.turns[:k]], last
                    )
                    out.append(p.sql)
                    last = p.sql
                preds.append(out)
            dt = time.perf_counter() - t0
            rep = Evaluator(schemas).evaluate([[(t.sql, i.db_id) for t in i.turns] for i in test], preds)
            base_qm = base_qm or rep.question_match
            print(
                f"{name:6} {context:12} {len(rep.turns):>10} {rep.question_match:>7.3f} {rep.interaction_match:>7.3f} "
                f"{rep.question_match / base_qm:>9.2f} {dt:>14.1f}"
            )


if __name__ == "__main__":
    main()
