"""What a write keeps of the user's files: modes, symlinks, locks, and leftovers of killed writers."""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from zjulab.common import (
    InputError,
    SerializationError,
    StoreError,
    atomic_directory,
    atomic_write_text,
    directory_lock,
    read_json,
    read_jsonl,
    recover_directory,
    remove_stale_temps,
    temp_dir_beside,
    write_json,
    write_jsonl,
)


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_replaced_file_keeps_its_mode(tmp_path, umask_022):
    f = tmp_path / "shared.json"
    f.write_text("{}")
    os.chmod(f, 0o664)
    write_json(f, {"a": 1})
    assert _mode(f) == 0o664
    os.chmod(f, 0o640)
    atomic_write_text(f, "x")
    assert _mode(f) == 0o640


def _other_group():
    mine = os.getegid()
    return next((g for g in os.getgroups() if g != mine), None)


@pytest.mark.skipif(
    os.geteuid() != 0 and _other_group() is None,
    reason="needs root, or membership of a second group, to give a file another group",
)
def test_replaced_file_keeps_its_group_and_owner(tmp_path):
    # a team's 0664 file must stay the team's: a rewrite used to hand it to the writer's group
    root = os.geteuid() == 0
    uid, gid = (4321, 4322) if root else (-1, _other_group())
    f = tmp_path / "shared.json"
    f.write_text("{}")
    os.chown(f, uid, gid)
    os.chmod(f, 0o664)
    write_json(f, {"a": 1})
    st = f.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, 0o664)
    if root:
        assert st.st_uid == uid
    store = tmp_path / "store"
    store.mkdir()
    os.chown(store, uid, gid)
    with atomic_directory(store) as d:
        (d / "x").write_text("1")
    assert store.stat().st_gid == gid
    if root:
        assert store.stat().st_uid == uid


def test_a_file_in_the_way_of_the_folder_is_a_typed_error(tmp_path):
    # was a bare FileExistsError "File exists: 'afile'", naming neither the target nor the cause
    (tmp_path / "afile").write_text("keep me")
    for write in (
        lambda: write_json(tmp_path / "afile" / "sub" / "x.json", {}),
        lambda: atomic_directory(tmp_path / "afile" / "store").__enter__(),
    ):
        with pytest.raises(StoreError, match=r"cannot be written, .*afile is a file, not a folder"):
            write()
    assert (tmp_path / "afile").read_text() == "keep me"


def test_a_refused_write_is_a_typed_error(tmp_path, monkeypatch):
    # a read-only folder (simulated: the suite may run as root, who may write anywhere)
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr("zjulab.common.io.tempfile.mkstemp", refuse)
    monkeypatch.setattr("zjulab.common.io.tempfile.mkdtemp", refuse)
    with pytest.raises(StoreError, match=r"x\.json: permission denied writing in"):
        write_json(tmp_path / "x.json", {})
    with pytest.raises(OSError):  # StoreError is an OSError: old handlers still catch it
        with atomic_directory(tmp_path / "store"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock"]


def test_new_file_follows_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        write_json(tmp_path / "a.json", [1])
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o664
    old = os.umask(0o077)
    try:
        write_jsonl(tmp_path / "b.jsonl", [1])
    finally:
        os.umask(old)
    assert _mode(tmp_path / "b.jsonl") == 0o600


def test_write_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "real.json"
    write_json(real, {"v": 1})
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(link, {"v": 2})
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert read_json(real) == {"v": 2}
    # a relative link into another folder is followed too
    (tmp_path / "sub").mkdir()
    rel = tmp_path / "sub" / "rel.json"
    rel.symlink_to("../real.json")
    write_json(rel, {"v": 3})
    assert rel.is_symlink() and read_json(real) == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json", "sub"]


def test_writing_onto_a_directory_is_a_typed_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="is a directory"):
        write_json(tmp_path / "d", {})
    assert (tmp_path / "d" / "keep.txt").read_text() == "user data"
    (tmp_path / "f").write_text("a file")
    with pytest.raises(InputError, match="not a directory"):
        with atomic_directory(tmp_path / "f"):
            pass
    assert (tmp_path / "f").read_text() == "a file"


def test_reading_a_directory_is_a_typed_error(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        read_json(tmp_path)
    with pytest.raises(StoreError, match="is a directory"):
        read_jsonl(tmp_path)


def test_unserialisable_value_names_the_file(tmp_path):
    import datetime

    with pytest.raises(SerializationError, match=r"meta.json.*date"):
        write_json(tmp_path / "meta.json", {"when": datetime.date(2024, 3, 2)})
    with pytest.raises(TypeError):  # still a TypeError for callers that caught that
        write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}, {"b": object()}])
    assert list(tmp_path.iterdir()) == []


def test_symlinked_store_is_rebuilt_beside_its_target(tmp_path):
    v1 = tmp_path / "index-v1"
    with atomic_directory(v1) as d:
        (d / "a.txt").write_text("1")
    link = tmp_path / "index"
    link.symlink_to("index-v1")
    for n in ("2", "3"):  # the second save is the one that used to fail
        with atomic_directory(link) as d:
            (d / "a.txt").write_text(n)
        assert link.is_symlink() and os.readlink(link) == "index-v1"
        assert (link / "a.txt").read_text() == n
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "index",
        "index-v1",
    ]


def test_replaced_directory_keeps_its_mode(tmp_path, umask_022):
    store = tmp_path / "store"
    with atomic_directory(store) as d:
        (d / "a").write_text("1")
    assert _mode(store) == 0o755
    os.chmod(store, 0o775)
    with atomic_directory(store) as d:
        (d / "a").write_text("2")
    assert _mode(store) == 0o775


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from zjulab.common import atomic_write, atomic_directory
    kind, target = sys.argv[1], sys.argv[2]
    if kind == "file":
        with atomic_write(target, "wb") as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    else:
        with atomic_directory(target) as d:
            (d / "big.bin").write_bytes(b"x" * 1000)
            print("writing", flush=True)
            time.sleep(60)
    """
)


def _kill_mid_write(kind, target):
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, kind, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_killed_writer_leaves_nothing_after_the_next_write(tmp_path, kind):
    target = tmp_path / ("f.bin" if kind == "file" else "store")
    for _ in range(3):
        _kill_mid_write(kind, target)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # each kill left a temporary; each later writer removed the one before it
    assert len(leftovers) == 1
    assert not target.exists()  # and never a torn target
    if kind == "file":
        atomic_write_text(target, "ok")
    else:
        with atomic_directory(target) as d:
            (d / "ok").write_text("ok")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_live_writers_temporaries_are_never_removed(tmp_path):
    target = tmp_path / "f.bin"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, "file", str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        assert remove_stale_temps(target) == 0
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert remove_stale_temps(target) == 1


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_temporaries_handed_out_are_named_for_the_sweep_and_sweep_dead_ones_first(tmp_path):
    target = tmp_path / "sub" / "store.db"  # the parent is created
    dead = tmp_path / "sub" / f".store.db.{_dead_pid()}.k1ll3d.tmp"
    live = tmp_path / "sub" / f".store.db.{os.getpid()}.l1ve.tmp"
    other = tmp_path / "sub" / f".other.db.{_dead_pid()}.k1ll3d.tmp"
    tmp = temp_dir_beside(target)
    assert tmp.parent == target.parent and tmp.name.startswith(f".store.db.{os.getpid()}.")
    assert tmp.name.endswith(".tmp") and tmp.is_dir()
    for p in (dead, live, other):
        p.mkdir()
    temp_dir_beside(target)
    assert not dead.exists() and live.exists() and other.exists()  # only dead writers' own
    assert remove_stale_temps(target) == 0  # ours (this pid) are left to the caller


def test_temporaries_beside_a_path_under_a_file_are_a_store_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        temp_dir_beside(tmp_path / "f" / "store.db")


def test_legacy_temporaries_are_removed_only_when_old(tmp_path):
    target = tmp_path / "f.json"
    fresh = tmp_path / ".f.json.abc123.tmp"
    old = tmp_path / ".f.json.zzz999.tmp"
    unrelated = tmp_path / ".g.json.abc123.tmp"
    for p in (fresh, old, unrelated):
        p.write_text("partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    write_json(target, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, unrelated.name, "f.json"])


_WRITER = textwrap.dedent(
    """
    import sys
    from zjulab.common import atomic_directory
    target, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        with atomic_directory(target) as d:
            (d / "who").write_text(tag)
            (d / "n").write_text(str(i))
    """
)


def test_two_processes_swapping_one_store_never_crash(tmp_path):
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(store), tag, "25"], stderr=subprocess.PIPE, text=True
        )
        for tag in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert (store / "who").read_text() in {"a", "b"} and (store / "n").read_text() == "24"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))] == []


def test_a_reader_recovery_never_breaks_a_swap_in_progress(tmp_path):
    store = tmp_path / "store"
    with atomic_directory(store) as d:
        (d / "v").write_text("1")
    os.replace(store, tmp_path / ".store.old")  # as if a writer were between its two renames
    with directory_lock(store):  # ... and still held its lock
        result = []
        t = threading.Thread(target=lambda: result.append(recover_directory(store)))
        t.start()
        t.join(0.3)
        assert t.is_alive() and not store.exists()  # the reader waits instead of racing
        os.replace(tmp_path / ".store.old", store)  # the writer finishes its swap
    t.join(10)
    assert result == [False] and (store / "v").read_text() == "1"


def test_directory_lock_times_out_with_a_typed_error(tmp_path):
    store = tmp_path / "store"
    with directory_lock(store):
        err = []

        def other():
            try:
                with directory_lock(store, timeout=0.1):
                    pass
            except StoreError as exc:
                err.append(str(exc))

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
    assert err and "holds its lock" in err[0]
    assert json.dumps(err)  # the message is plain text


def test_a_read_only_file_system_is_a_store_error_naming_it(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StoreError, match=r"store\.db: read-only file system writing in"):
        temp_dir_beside(tmp_path / "store.db")
    with pytest.raises(StoreError, match="read-only file system"):
        atomic_write_text(tmp_path / "f.txt", "x")
    from pathlib import Path

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(StoreError, match=r"new/f\.txt: read-only file system creating"):
        atomic_write_text(tmp_path / "new" / "f.txt", "x")


@pytest.mark.parametrize("links", [True, False])
def test_place_new_file_never_replaces_what_is_there(tmp_path, monkeypatch, links):
    from zjulab.common import place_new_file

    if not links:  # a file system without hard links: the name is claimed, then renamed onto

        def no_links(src, dst):
            raise PermissionError("no hard links here")

        monkeypatch.setattr(os, "link", no_links)
    work = temp_dir_beside(tmp_path / "out.bin")
    (work / "a").write_bytes(b"first")
    assert place_new_file(work / "a", tmp_path / "out.bin") is True
    (work / "b").write_bytes(b"second")
    assert place_new_file(work / "b", tmp_path / "out.bin") is False
    assert (tmp_path / "out.bin").read_bytes() == b"first"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert place_new_file(work / "b", tmp_path / "dangling") is False
    assert not (tmp_path / "nowhere").exists()
