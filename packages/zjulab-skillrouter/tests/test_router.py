from __future__ import annotations

import numpy as np
import pytest

from zjulab.common.errors import IndexMismatchError, InputError, SchemaVersionError
from zjulab.common.io import read_json, write_json
from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import (
    EmptyPoolError,
    EncoderMismatchError,
    IndexFormatError,
    InvalidKError,
    NotIndexedError,
    RouterConfig,
    SkillRouter,
    VectorIndex,
    brute_force_search,
    format_skill,
    reciprocal_rank_fusion,
)


class LengthScorer:
    """Scores a pair by minus the document length: the shortest document wins."""

    model_id = "length-scorer"

    def __init__(self):
        self.pairs = []

    def score(self, pairs, batch_size=16):
        self.pairs.extend(pairs)
        return np.array([-len(d) for _, d in pairs], dtype=np.float32)


def dense_router(pool, **cfg):
    cfg.setdefault("rerank", False)
    cfg.setdefault("profile", "embedded")  # a symmetric bag-of-words encoder: no query instruction
    return SkillRouter(HashingEncoder(128), None, RouterConfig(**cfg)).index(pool)


def test_dense_route_finds_body_match(pool):
    r = dense_router(pool)
    got = r.route("merge several PDF documents into one file", k=3)
    assert got[0].skill.id == "pdf-merge"
    assert [g.rank for g in got] == [1, 2, 3]
    assert all(g.rerank_score is None for g in got)
    assert got[0].retrieval_score >= got[1].retrieval_score >= got[2].retrieval_score


def test_name_description_ablation_loses_the_body(pool):
    full = dense_router(pool)
    nd = dense_router(pool, fields="name_description")
    q = "run OCR on scanned pages with tesseract"
    assert full.route(q, k=1)[0].skill.id == "pdf-ocr"
    assert nd.skill_texts()[1] == "pdf-toolkit | Work with PDF files."
    # without the body the three PDF skills are indistinguishable to the encoder
    assert nd.route(q, k=1)[0].skill.id != "pdf-ocr" or nd.route(q, k=1)[0].retrieval_score <= 0.0


def test_bm25_and_hybrid_are_rrf_of_both(pool):
    q = "compress log files with logrotate"
    bm = SkillRouter(None, None, RouterConfig(retriever="bm25", rerank=False)).index(pool)
    assert bm.route(q, k=1)[0].skill.id == "log-rotate"
    de = dense_router(pool)
    hy = dense_router(pool, retriever="hybrid")
    n = len(pool)
    expected = reciprocal_rank_fusion(
        [[r.skill.id for r in de.route(q, k=n)], [r.skill.id for r in bm.route(q, k=n)]], k=60
    )
    got = hy.route(q, k=n)
    assert [r.skill.id for r in got] == [key for key, _ in expected]
    assert got[0].retrieval_score == pytest.approx(expected[0][1])


def test_rerank_reorders_top_rerank_k_and_keeps_tail(pool):
    scorer = LengthScorer()
    cfg = RouterConfig(retrieve_k=6, rerank_k=3)
    r = SkillRouter(HashingEncoder(128), scorer, cfg).index(pool)
    q = "pdf files"
    first = r.route(q, k=6, rerank=False)
    got = r.route(q, k=6)
    head = sorted(first[:3], key=lambda x: len(format_skill(x.skill, desc_max=500, body_max=2000)))
    assert [g.skill.id for g in got[:3]] == [h.skill.id for h in head]
    assert [g.skill.id for g in got[3:]] == [f.skill.id for f in first[3:]]
    assert all(g.rerank_score is not None for g in got[:3]) and all(g.rerank_score is None for g in got[3:])
    # the reranker saw the raw query and the 500/2000-budget document
    assert scorer.pairs[0][0] == q
    assert scorer.pairs[0][1].count(" | ") == 2


def test_route_many_matches_route(pool):
    r = dense_router(pool, rerank=True, rerank_k=4, retrieve_k=8)
    r._reranker = LengthScorer()
    qs = ["send an email", "resize photos", "nginx latency"]
    many = r.route_many(qs, k=4)
    assert [[x.skill.id for x in m] for m in many] == [[x.skill.id for x in r.route(q, k=4)] for q in qs]


@pytest.mark.parametrize("k", [0, -1, 9])
def test_bad_k(pool, k):
    r = dense_router(pool)
    with pytest.raises(InvalidKError, match=f"k={k} must be in \\[1, 8\\]"):
        r.route("x", k=k)


def test_errors_before_index_and_on_bad_input(pool):
    r = SkillRouter(HashingEncoder(16), None, RouterConfig(rerank=False))
    with pytest.raises(NotIndexedError):
        r.route("x", k=1)
    with pytest.raises(EmptyPoolError):
        r.index([])
    r.index(pool)
    with pytest.raises(InputError, match="non-empty string"):
        r.route("   ", k=1)


def test_save_load_identical_results(tmp_path, pool):
    enc = HashingEncoder(128)
    r = SkillRouter(enc, None, RouterConfig(retriever="hybrid", rerank=False)).index(pool)
    path = r.save(tmp_path / "idx")
    assert sorted(p.name for p in path.iterdir()) == [
        ".zjulab-skillrouter-index",
        "dense.faiss",
        "router.json",
        "skills.jsonl",
    ]
    loaded = SkillRouter.load(path, encoder=HashingEncoder(128))
    assert loaded.skills == pool
    for q in ["merge pdf", "gps exif privacy", "smtp attachments"]:
        a, b = r.route(q, k=5), loaded.route(q, k=5)
        assert [(x.skill.id, x.retrieval_score) for x in a] == [(x.skill.id, x.retrieval_score) for x in b]


def test_load_with_another_encoder_is_an_error(tmp_path, pool):
    dense_router(pool).save(tmp_path / "idx")
    with pytest.raises(EncoderMismatchError, match="hashing-128-bigram") as info:
        SkillRouter.load(tmp_path / "idx", encoder=HashingEncoder(64))
    assert isinstance(info.value, IndexMismatchError)
    with pytest.raises(EncoderMismatchError):
        SkillRouter.load(tmp_path / "idx", encoder="some/other-model")


def test_load_rejects_corrupt_or_newer_stores(tmp_path, pool):
    path = dense_router(pool).save(tmp_path / "idx")
    meta = read_json(path / "router.json")
    write_json(path / "router.json", {**meta, "version": 99})
    with pytest.raises(SchemaVersionError, match="version 99"):
        SkillRouter.load(path, encoder=HashingEncoder(128))
    write_json(path / "router.json", meta)
    (path / "dense.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="faiss"):
        SkillRouter.load(path, encoder=HashingEncoder(128))
    with pytest.raises(IndexFormatError, match=r"router\.json is missing"):
        SkillRouter.load(tmp_path / "nothing-here")


def test_failed_save_leaves_previous_index_intact(tmp_path, pool, monkeypatch):
    path = dense_router(pool).save(tmp_path / "idx")
    before = (path / "skills.jsonl").read_bytes()
    r2 = dense_router(pool[:3])
    import zjulab.skillrouter.router as router_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(router_mod, "write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        r2.save(path, overwrite=True)
    assert (path / "skills.jsonl").read_bytes() == before
    # only the index and its lock file (zjulab.common.io's cross-process lock); no temporaries
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx"]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_matches_brute_force(kind):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2000, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = v[:20] + 0.01 * rng.standard_normal((20, 32)).astype(np.float32)
    idx = VectorIndex(32, kind, ivf_nprobe=64).build(v)
    s, i = idx.search(q, 10)
    bs, bi = brute_force_search(v, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, bi)])
    if kind == "flat":
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(s, bs, rtol=1e-5, atol=1e-5)
    else:
        assert recall >= 0.9
    restored = VectorIndex(32, kind, ivf_nprobe=64).load_bytes(idx.to_bytes())
    np.testing.assert_array_equal(restored.search(q, 10)[1], i)
    with pytest.raises(InvalidKError):
        idx.search(q, 2001)
    with pytest.raises(InputError, match="dimension 16"):
        idx.search(q[:, :16], 3)


@pytest.mark.gpu
def test_faiss_gpu_index_matches_cpu():
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("faiss has no GPU support in this environment")
    rng = np.random.default_rng(1)
    v = rng.standard_normal((5000, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cpu = VectorIndex(64, "flat").build(v)
    gpu = VectorIndex(64, "flat", use_gpu=True).build(v)
    np.testing.assert_array_equal(cpu.search(v[:10], 20)[1], gpu.search(v[:10], 20)[1])
    restored = VectorIndex(64, "flat").load_bytes(gpu.to_bytes())
    np.testing.assert_array_equal(restored.search(v[:10], 20)[1], cpu.search(v[:10], 20)[1])
