from __future__ import annotations

import pytest

from zjulab.common.errors import NotFoundError
from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import MiningConfig, Skill
from zjulab.skillrouter.config import ConfigError
from zjulab.skillrouter.mining import mine_hard_negatives


def big_pool():
    topics = ["pdf", "image", "audio", "video", "email", "log", "sql", "git"]
    out = []
    for t in topics:
        for j in range(10):
            out.append(
                Skill(
                    name=f"{t}-{j}",
                    description=f"{t} tools",
                    body=f"{t} task number {j} with {t} files {j}",
                    id=f"{t}/{j}",
                    category=t,
                )
            )
    return out


def test_counts_per_source_and_exclusions():
    pool = big_pool()
    ex = mine_hard_negatives(
        [("pdf task number 0 with pdf files", "pdf/0")],
        pool,
        HashingEncoder(256),
        MiningConfig(filter_false_negatives=False),
    )
    assert len(ex) == 1
    e = ex[0]
    assert e.positive.id == "pdf/0"
    assert e.sources == ["dense"] * 4 + ["bm25"] * 3 + ["category"] * 2 + ["random"]
    ids = [n.id for n in e.negatives]
    assert len(set(ids)) == 10 and "pdf/0" not in ids
    assert all(n.category == "pdf" for n, s in zip(e.negatives, e.sources) if s == "category")


def test_multiple_positives_are_never_negatives():
    pool = big_pool()
    ex = mine_hard_negatives([("pdf files", ["pdf/0", "pdf/1"])], pool, HashingEncoder(256))
    assert [e.positive.id for e in ex] == ["pdf/0", "pdf/1"]
    for e in ex:
        assert {"pdf/0", "pdf/1"}.isdisjoint(n.id for n in e.negatives)


def test_source_running_out_gives_fewer():
    pool = big_pool()[:5]  # five skills of one category
    ex = mine_hard_negatives(
        [("pdf task", "pdf/0")], pool, HashingEncoder(64), MiningConfig(filter_false_negatives=False)
    )
    assert len(ex[0].negatives) == 4  # only four other skills exist
    assert ex[0].sources[:4] == ["dense"] * 4


def test_false_negative_filter_on_constructed_case():
    query = "convert scanned invoices to searchable text with ocr"
    pool = [
        Skill(name="p", description="d", body="ocr for scanned invoices", id="labelled"),
        # an unlabelled duplicate of the query: the encoder scores it above the positive
        Skill(name="q", description="d", body=query, id="unlabelled-positive"),
        *[
            Skill(name=f"n{i}", description="d", body=f"unrelated topic {i} cooking recipes", id=f"neg{i}")
            for i in range(8)
        ],
    ]
    enc = HashingEncoder(256)
    kept = mine_hard_negatives([(query, "labelled")], pool, enc, MiningConfig(filter_false_negatives=False))[
        0
    ]
    assert "unlabelled-positive" in [n.id for n in kept.negatives] and kept.filtered == 0
    ex = mine_hard_negatives([(query, "labelled")], pool, enc, MiningConfig())[0]
    assert "unlabelled-positive" not in [n.id for n in ex.negatives]
    assert ex.filtered == 1
    # BM25 offers only skills sharing a query term (both are excluded here): no zero-score
    # "lexical hard negatives"; dense gives 4 and random 1
    assert ex.sources == ["dense"] * 4 + ["random"]


def test_mining_errors():
    with pytest.raises(NotFoundError, match="'nope'"):
        mine_hard_negatives([("q", "nope")], big_pool(), HashingEncoder(16))
    with pytest.raises(ConfigError, match="at least one"):
        MiningConfig(n_dense=0, n_bm25=0, n_category=0, n_random=0)
