"""Saving never destroys a user's folder, survives a kill, and a tampered store is detected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import (
    EncoderMismatchError,
    IndexExistsError,
    IndexFormatError,
    IndexIntegrityError,
    NotAnIndexError,
    RouterConfig,
    SkillRouter,
    SkillRouterError,
)
from zjulab.skillrouter.cli import main


def dense(pool, dim=128):
    return SkillRouter(HashingEncoder(dim), None, RouterConfig(rerank=False)).index(pool)


def test_save_refuses_a_folder_that_is_not_an_index(tmp_path, pool):
    victim = tmp_path / "victim"
    (victim / "pdf").mkdir(parents=True)
    (victim / "pdf" / "SKILL.md").write_text("---\nname: pdf\n---\nbody\n")
    (victim / "notes.txt").write_text("mine")
    r = dense(pool)
    for overwrite in (False, True):
        with pytest.raises(NotAnIndexError, match="holds no skill-router index") as info:
            r.save(victim, overwrite=overwrite)
        assert isinstance(info.value, SkillRouterError)
    assert (victim / "pdf" / "SKILL.md").read_text() == "---\nname: pdf\n---\nbody\n"
    assert (victim / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotAnIndexError, match="not a folder"):
        r.save(a_file, overwrite=True)
    assert a_file.read_text() == "x"


def test_overwrite_only_over_an_index_and_only_with_the_flag(tmp_path, pool):
    empty = tmp_path / "empty"
    empty.mkdir()
    dense(pool).save(empty)  # an empty folder is fine
    with pytest.raises(IndexExistsError, match="--overwrite"):
        dense(pool[:3]).save(empty)
    assert len(SkillRouter.load(empty, encoder=HashingEncoder(128))) == len(pool)
    dense(pool[:3]).save(empty, overwrite=True)
    assert len(SkillRouter.load(empty, encoder=HashingEncoder(128))) == 3
    (empty / "my-notes.md").write_text("added by the user")
    with pytest.raises(NotAnIndexError, match=r"my-notes\.md"):
        dense(pool).save(empty, overwrite=True)
    assert (empty / "my-notes.md").read_text() == "added by the user"


def test_cli_index_out_onto_the_source_folder_deletes_nothing(tmp_path, capsys):
    src = tmp_path / "victim"
    for rel, body in (("a", "Merge PDF documents."), ("b", "Resize photos.")):
        (src / rel).mkdir(parents=True)
        (src / rel / "SKILL.md").write_text(f"---\nname: {rel}\ndescription: d\n---\n{body}\n")
    argv = ["index", str(src), "--out", str(src), "--retriever", "bm25", "--no-rerank"]
    assert main(argv) != 0
    assert "holds no skill-router index" in capsys.readouterr().err
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("SKILL.md")) == [
        "a/SKILL.md",
        "b/SKILL.md",
    ]
    out = tmp_path / "idx"
    assert main(["index", str(src), "--out", str(out), "--retriever", "bm25", "--no-rerank"]) == 0
    assert main(["index", str(src), "--out", str(out), "--retriever", "bm25", "--no-rerank"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["index", str(src), "--out", str(out), "--retriever", "bm25", "--no-rerank", "--overwrite"]) == 0
    )


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import zjulab.skillrouter.router as rm
    from zjulab.common.testing import HashingEncoder
    from zjulab.skillrouter import RouterConfig, SkillRouter, Skill
    pool = [Skill(name=f"s{i}", description="d", body=f"body {i} words", id=f"s{i}") for i in range(300)]
    r = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False)).index(pool)
    real = rm.write_json
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the big files, before router.json
    rm.write_json = die
    r.save(sys.argv[1], overwrite=True)
    """
)


def test_kill_during_save_keeps_the_old_index_and_the_next_save_cleans_up(tmp_path, pool):
    path = tmp_path / "idx"
    dense(pool, 64).save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the killed save should have left its temporary folder"
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    loaded = SkillRouter.load(path, encoder=HashingEncoder(64))  # the reader cleans up too
    assert len(loaded) == len(pool)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded.save(path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx"]


def _rewrite_skills(path, fn):
    lines = (path / "skills.jsonl").read_text().splitlines()
    (path / "skills.jsonl").write_text("\n".join(fn(lines)) + "\n")


def test_shuffled_or_edited_skill_store_is_detected(tmp_path, pool):
    path = dense(pool).save(tmp_path / "idx")
    original = (path / "skills.jsonl").read_text()
    _rewrite_skills(path, lambda ls: [ls[1], ls[0], *ls[2:]])
    with pytest.raises(IndexIntegrityError, match="different order"):
        SkillRouter.load(path, encoder=HashingEncoder(128))
    (path / "skills.jsonl").write_text(original)

    def edit(ls):
        rec = json.loads(ls[2])
        rec["body"] += " (edited)"
        return [*ls[:2], json.dumps(rec), *ls[3:]]

    _rewrite_skills(path, edit)
    with pytest.raises(IndexIntegrityError, match="'pdf-forms'") as info:
        SkillRouter.load(path, encoder=HashingEncoder(128))
    assert str(path / "skills.jsonl") in str(info.value)


def test_corrupt_router_json_is_a_typed_error_naming_the_file(tmp_path, pool):
    path = dense(pool).save(tmp_path / "idx")
    (path / "router.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match=r"router\.json") as info:
        SkillRouter.load(path, encoder=HashingEncoder(128))
    assert isinstance(info.value, SkillRouterError)
    (path / "router.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(IndexFormatError, match=r"router\.json"):
        SkillRouter.load(path, encoder=HashingEncoder(128))


class ScaledHashing(HashingEncoder):
    """The same name and dimension as HashingEncoder(128), different function (changed weights)."""

    def __init__(self, mix):
        super().__init__(128)
        rng = np.random.default_rng(0)
        self.mix = np.eye(128, dtype=np.float32) + mix * rng.standard_normal((128, 128)).astype(np.float32)

    def encode(self, texts, batch_size=32, **kw):
        v = super().encode(texts, batch_size) @ self.mix
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def test_encoder_changed_in_place_is_refused(tmp_path, pool):
    path = dense(pool).save(tmp_path / "idx")
    assert len(SkillRouter.load(path, encoder=HashingEncoder(128))) == len(pool)
    for mix in (0.05, 0.5):
        with pytest.raises(EncoderMismatchError, match="probe embeddings moved"):
            SkillRouter.load(path, encoder=ScaledHashing(mix))


def test_weights_hash_catches_a_tiny_in_place_edit(tmp_path, pool, tiny_encoder_path):
    import torch

    from zjulab.common.encoders import TransformersEncoder

    enc = TransformersEncoder(str(tiny_encoder_path), pooling="mean", device="cpu")
    path = SkillRouter(enc, None, RouterConfig(rerank=False)).index(pool).save(tmp_path / "idx")
    meta = json.loads((path / "router.json").read_text())
    assert meta["encoder"]["model_id"] == str(tiny_encoder_path.resolve())
    assert len(meta["encoder"]["fingerprint"]["weights_blake2b"]) == 32
    same = TransformersEncoder(str(tiny_encoder_path), pooling="mean", device="cpu")
    assert len(SkillRouter.load(path, encoder=same)) == len(pool)
    with torch.no_grad():
        next(same.model.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(EncoderMismatchError, match="weights_blake2b"):
        SkillRouter.load(path, encoder=same)


def test_relative_encoder_path_is_stored_resolved(tmp_path, pool, tiny_encoder_path, monkeypatch):
    monkeypatch.chdir(tiny_encoder_path.parent)
    r = SkillRouter(tiny_encoder_path.name, None, RouterConfig(rerank=False), device="cpu").index(pool)
    path = r.save(tmp_path / "idx")
    meta = json.loads((path / "router.json").read_text())
    assert meta["encoder"]["model_id"] == str(tiny_encoder_path.resolve())
    monkeypatch.chdir(tmp_path)
    loaded = SkillRouter.load(path, device="cpu")
    assert [x.skill.id for x in loaded.route("merge pdf", k=3)] == [
        x.skill.id for x in r.route("merge pdf", k=3)
    ]
    assert os.path.isabs(str(loaded._encoder_spec))


def _user_backup(path):
    path.mkdir()
    (path / "notes.md").write_text("mine")
    return {p.name: p.read_text() for p in path.iterdir()}


def test_a_users_dot_old_folder_beside_an_output_is_never_moved_or_deleted(tmp_path, pool, capsys):
    from zjulab.skillrouter.outputs import check_model_dir, save_model_dir

    # a reader pointed at the wrong folder must not "tidy" the user's backup of it
    (tmp_path / "skills").mkdir()
    backup = _user_backup(tmp_path / ".skills.old")
    with pytest.raises(IndexFormatError):
        SkillRouter.load(tmp_path / "skills")
    assert {p.name: p.read_text() for p in (tmp_path / ".skills.old").iterdir()} == backup
    # nor take it for a killed save's parked index when the folder is missing
    backup = _user_backup(tmp_path / ".idx.old")
    with pytest.raises(IndexFormatError):
        SkillRouter.load(tmp_path / "idx")
    with pytest.raises(NotAnIndexError, match=r"\.idx\.old exists and was not written by this library"):
        dense(pool, 32).save(tmp_path / "idx")
    (tmp_path / "skills" / "pdf").mkdir()
    (tmp_path / "skills" / "pdf" / "SKILL.md").write_text("---\nname: pdf\ndescription: PDFs.\n---\nMerge.\n")
    assert (
        main(["index", str(tmp_path / "skills"), "--out", str(tmp_path / "idx"), "--retriever", "bm25"]) == 2
    )
    assert ".idx.old exists and was not written by this library" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()
    assert {p.name: p.read_text() for p in (tmp_path / ".idx.old").iterdir()} == backup
    # training outputs follow the same rule, before any training
    _user_backup(tmp_path / ".enc.old")
    with pytest.raises(NotAnIndexError, match=r"\.enc\.old"):
        check_model_dir(tmp_path / "enc", overwrite=True)
    with pytest.raises(NotAnIndexError):
        save_model_dir(tmp_path / "enc", lambda t: (t / "w.bin").write_bytes(b"1"), True)
    assert (tmp_path / ".enc.old" / "notes.md").read_text() == "mine"


def test_a_parked_index_of_our_own_is_still_recovered(tmp_path, pool):
    path = tmp_path / "idx2"
    dense(pool, 32).save(path)
    os.replace(path, tmp_path / ".idx2.old")  # a kill between the swap's two renames
    loaded = SkillRouter.load(path, encoder=HashingEncoder(32))
    assert len(loaded) == len(pool) and not (tmp_path / ".idx2.old").exists()


def test_load_reads_under_the_folder_lock(tmp_path, pool):
    """A load never reads router.json of one save and skills.jsonl / dense.faiss of another."""
    import threading

    from zjulab.common.io import directory_lock

    path = tmp_path / "idx"
    dense(pool, 32).save(path)
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def writer():
        with directory_lock(path):  # what a concurrent save holds while it swaps
            held.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    held.wait(30)
    result = []
    r = threading.Thread(
        target=lambda: (result.append(SkillRouter.load(path, encoder=HashingEncoder(32))), done.set())
    )
    r.start()
    assert not done.wait(0.5), "load read the folder while a swap held its lock"
    release.set()
    t.join(30)
    r.join(30)
    assert done.is_set() and len(result[0]) == len(pool)


def test_a_parked_index_left_half_removed_by_a_kill_does_not_block_the_next_save(tmp_path, pool):
    """A kill while the swap removes ``.idx.old`` may take the marker first; what is left holds only
    index files, so the next save and load tidy it instead of refusing forever."""
    path = tmp_path / "idx"
    dense(pool, 32).save(path)
    old = tmp_path / ".idx.old"
    old.mkdir()
    (old / "skills.jsonl").write_text((path / "skills.jsonl").read_text())  # no marker left
    assert len(SkillRouter.load(path, encoder=HashingEncoder(32))) == len(pool)
    assert not old.exists()
    old.mkdir()
    (old / "dense.faiss").write_bytes(b"x")
    dense(pool[:3], 32).save(path, overwrite=True)
    assert not old.exists() and len(SkillRouter.load(path, encoder=HashingEncoder(32))) == 3
    # one file of the user's in it and it is theirs again: refused, untouched
    old.mkdir()
    (old / "router.json").write_text("{}")
    (old / "notes.md").write_text("mine")
    with pytest.raises(NotAnIndexError, match=r"\.idx\.old exists"):
        dense(pool, 32).save(path, overwrite=True)
    assert sorted(p.name for p in old.iterdir()) == ["notes.md", "router.json"]
