"""Torch-free import, incremental updates, filters, training outputs and in-batch negatives."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import (
    IndexExistsError,
    NotAnIndexError,
    RouterConfig,
    Skill,
    SkillRouter,
    TrainingExample,
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_and_torch_free_routing_leave_torch_out():
    proc = _run(
        """
        import sys
        import zjulab.skillrouter as sr
        from zjulab.skillrouter.cli import build_parser
        from zjulab.common.testing import HashingEncoder
        build_parser().format_help()
        pool = [sr.Skill(name=f"s{i}", description="d", body=f"topic {i} pdf" if i % 2 else f"topic {i}") for i in range(6)]
        bm = sr.SkillRouter(None, None, sr.RouterConfig(retriever="bm25", rerank=False)).index(pool)
        dense = sr.SkillRouter(HashingEncoder(32), None, sr.RouterConfig(rerank=False)).index(pool)
        assert bm.route("pdf", k=3) and dense.route("pdf", k=3)
        print(sorted(m for m in ("torch", "transformers", "peft", "sentence_transformers") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_torch_backed_names_raise_the_install_line_when_torch_is_missing():
    proc = _run(
        """
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import zjulab.skillrouter as sr
        from zjulab.common.errors import MissingDependencyError
        for get in (lambda: sr.train_encoder, lambda: sr.load_skill_encoder("x"), lambda: sr.embedded_encoder()):
            try:
                get()
            except MissingDependencyError as exc:
                assert "pip install 'zjulab-skillrouter[torch]'" in str(exc), str(exc)
            else:
                raise SystemExit("no MissingDependencyError")
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def _big_pool(n=1000):
    topics = ["pdf", "image", "log", "mail", "sql", "docker", "git", "audio"]
    return [
        Skill(
            name=f"skill-{i}",
            description=f"{topics[i % 8]} helper",
            body=f"{topics[i % 8]} task number {i} with tool{i % 37}",
            id=f"s{i:04d}",
            category=topics[i % 8],
            metadata={"tags": [topics[i % 8], f"t{i % 5}"]},
        )
        for i in range(n)
    ]


def test_upsert_one_edited_of_1000_reencodes_one_and_equals_a_rebuild():
    pool = _big_pool()
    r = SkillRouter(HashingEncoder(64), None, RouterConfig(retriever="hybrid", rerank=False)).index(pool)
    assert r.encoded_texts == 1000
    edited = Skill(**{**pool[500].__dict__, "body": "now it converts scanned invoices with tesseract"})
    counts = r.upsert([*pool[:10], edited])
    assert counts == {"added": 0, "updated": 1, "unchanged": 10}
    assert r.encoded_texts == 1001  # exactly one re-encode
    new_pool = [*pool[:500], edited, *pool[501:]]
    full = SkillRouter(HashingEncoder(64), None, RouterConfig(retriever="hybrid", rerank=False)).index(
        new_pool
    )
    for q in ("scanned invoices tesseract", "docker task 17", "mail helper tool3"):
        assert [(x.skill.id, x.score) for x in r.route(q, k=10)] == [
            (x.skill.id, x.score) for x in full.route(q, k=10)
        ]
    added = Skill(name="new", description="d", body="brand new skill for ocr", id="zz-new")
    assert r.upsert([added])["added"] == 1 and r.encoded_texts == 1002
    assert r.remove(["zz-new", "s0000"]) == 2 and len(r) == 999
    assert r.encoded_texts == 1002  # removal re-encodes nothing
    rebuilt = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False)).index(new_pool[1:])
    r2 = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False)).index(new_pool)
    r2.remove(["s0000"])
    assert [x.skill.id for x in r2.route("pdf task", k=20)] == [
        x.skill.id for x in rebuilt.route("pdf task", k=20)
    ]


def test_cli_index_update_reencodes_only_changes(tmp_path, capsys):
    from zjulab.skillrouter.cli import main

    src = tmp_path / "skills"
    for i in range(5):
        (src / f"s{i}").mkdir(parents=True)
        (src / f"s{i}" / "SKILL.md").write_text(f"---\nname: s{i}\ndescription: d\n---\nbody {i}\n")
    out = tmp_path / "idx"
    assert main(["index", str(src), "--out", str(out), "--retriever", "bm25", "--no-rerank"]) == 0
    (src / "s2" / "SKILL.md").write_text("---\nname: s2\ndescription: d\n---\nnew body about pdf\n")
    (src / "s4" / "SKILL.md").unlink()
    assert main(["index", str(src), "--out", str(out), "--update"]) == 0
    assert "0 added, 1 re-encoded, 3 unchanged, 1 removed" in capsys.readouterr().out
    assert main(["route", str(out), "pdf", "-k", "1", "--json"]) == 0
    import json

    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert rows[0]["id"] == "s2" and rows[0]["rank"] == 1 and set(rows[0]) >= {"score", "path", "name"}


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_where_filter_applies_before_the_cut(index_type):
    pool = _big_pool(200)
    for kind in ("dense", "bm25", "hybrid"):
        cfg = RouterConfig(retriever=kind, rerank=False, index_type=index_type, ivf_nprobe=64)
        r = SkillRouter(HashingEncoder(64), None, cfg).index(pool)
        got = r.route("helper task", k=10, where={"category": "sql"})
        assert len(got) == 10 and all(g.skill.category == "sql" for g in got)
        tagged = r.route("helper task", k=5, where={"tags": "t3", "category": ["pdf", "log"]})
        assert len(tagged) == 5
        assert all("t3" in g.skill.metadata["tags"] and g.skill.category in ("pdf", "log") for g in tagged)
        assert r.route("helper task", k=5, where={"category": "nothing"}) == []


def test_embedded_router_does_not_rerank_by_default(monkeypatch, caplog):
    import zjulab.skillrouter.router as rm

    monkeypatch.setattr(rm, "embedded_encoder", lambda **kw: HashingEncoder(32))
    monkeypatch.setattr(rm, "embedded_reranker", lambda **kw: pytest.fail("the reranker was loaded"))
    with caplog.at_level(logging.INFO, logger="zjulab.skillrouter.router"):
        r = SkillRouter.embedded()
    assert r.config.rerank is False
    assert "ranks worse than MiniLM dense retrieval alone" in caplog.text


def test_training_refuses_a_foreign_output_folder(tmp_path):
    from zjulab.skillrouter.outputs import MODEL_MARKER, check_model_dir, save_model_dir

    user = tmp_path / "project"
    user.mkdir()
    (user / "main.py").write_text("print('mine')")
    with pytest.raises(NotAnIndexError, match="no model trained here"):
        check_model_dir(user, overwrite=True)
    out = save_model_dir(tmp_path / "enc", lambda t: (t / "w.bin").write_bytes(b"1"), False)
    assert (out / MODEL_MARKER).is_file()
    with pytest.raises(IndexExistsError):
        save_model_dir(out, lambda t: (t / "w.bin").write_bytes(b"2"), False)
    save_model_dir(out, lambda t: (t / "w.bin").write_bytes(b"2"), True)
    assert (out / "w.bin").read_bytes() == b"2"
    assert (user / "main.py").read_text() == "print('mine')"


def test_relevance_aware_batches_have_no_false_in_batch_negatives():
    from zjulab.skillrouter.encoder_training import batch_conflicts, relevance_aware_batches

    sk = {i: Skill(name=i, description="d", body=f"body {i}", id=i) for i in "abcdefgh"}
    # q1's partial match "b" is q2's positive; q3 and q4 share a query
    ex = [
        TrainingExample("q1", sk["a"], [sk["e"]], relevant_ids=frozenset("ab")),
        TrainingExample("q2", sk["b"], [sk["f"]], relevant_ids=frozenset("b")),
        TrainingExample("q3", sk["c"], [sk["g"]], relevant_ids=frozenset("cd")),
        TrainingExample("q3", sk["d"], [sk["g"]], relevant_ids=frozenset("cd")),
        TrainingExample("q5", sk["h"], [sk["e"]], relevant_ids=frozenset("h")),
    ]
    sequential = [[0, 1], [2, 3], [4]]
    assert batch_conflicts(ex, sequential) == 3  # b for q1; d for the first q3, c for the second
    batches = relevance_aware_batches(ex, 2, range(5))
    assert batch_conflicts(ex, batches) == 0
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    assert all(len(b) <= 2 for b in batches)
    rng = np.random.default_rng(0)
    assert batch_conflicts(ex, relevance_aware_batches(ex, 3, rng.permutation(5).tolist())) == 0


def test_dense_routing_with_a_served_encoder_saves_loads_and_detects_a_swap(tmp_path, pool):
    from zjulab.common.embeddings import OpenAIEncoder
    from zjulab.common.testing.server import ChatServer
    from zjulab.skillrouter import EncoderMismatchError

    local = HashingEncoder(64)
    with ChatServer(encoder=local, models=["emb"]) as server:
        served = OpenAIEncoder("emb", base_url=server.url)
        cfg = RouterConfig(rerank=False, profile="embedded")
        r = SkillRouter(served, None, cfg).index(pool)
        want = [
            x.skill.id for x in SkillRouter(local, None, cfg).index(pool).route("merge pdf documents", k=3)
        ]
        assert [x.skill.id for x in r.route("merge pdf documents", k=3)] == want
        path = r.save(tmp_path / "idx")
        back = SkillRouter.load(path, encoder=OpenAIEncoder("emb", base_url=server.url))
        assert [x.skill.id for x in back.route("merge pdf documents", k=3)] == want
    # the same model name behind another server, answering with other vectors
    with ChatServer(encoder=HashingEncoder(64, bigrams=False), models=["emb"]) as other:
        with pytest.raises(EncoderMismatchError, match="probe embeddings moved"):
            SkillRouter.load(path, encoder=OpenAIEncoder("emb", base_url=other.url))


def test_filtered_search_falls_back_to_exact_when_the_index_cannot_filter(monkeypatch):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    from zjulab.skillrouter import VectorIndex, brute_force_search

    idx = VectorIndex(8).build(v)
    allowed = np.array([3, 9, 10, 31, 44])
    want_s, want_i = idx.search(v[:2], 3, allowed=allowed)

    class NoSelector:
        def __init__(self, inner):
            self.inner = inner
            self.ntotal = inner.ntotal

        def search(self, q, k, params=None):
            if params is not None:
                raise RuntimeError("no IDSelector on this index")
            return self.inner.search(q, k)

        def reconstruct_n(self, a, b):
            return self.inner.reconstruct_n(a, b)

    idx._index = NoSelector(idx._index)
    got_s, got_i = idx.search(v[:2], 3, allowed=allowed)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-5)
    assert set(got_i.ravel()) <= set(allowed.tolist())
    _, bi = brute_force_search(v[allowed], v[:2], 3)
    np.testing.assert_array_equal(allowed[bi], got_i)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_upsert_on_approximate_indexes_equals_a_rebuild(index_type):
    pool = _big_pool(300)
    cfg = RouterConfig(rerank=False, profile="embedded", index_type=index_type, ivf_nprobe=4)
    r = SkillRouter(HashingEncoder(64), None, cfg).index(pool)
    edited = Skill(**{**pool[7].__dict__, "body": "tesseract ocr for scanned invoices"})
    assert r.upsert([edited])["updated"] == 1
    full = SkillRouter(HashingEncoder(64), None, cfg).index([*pool[:7], edited, *pool[8:]])
    for q in ("scanned invoices tesseract", "git task 11", "audio helper tool5"):
        assert [x.skill.id for x in r.route(q, k=10)] == [x.skill.id for x in full.route(q, k=10)]
