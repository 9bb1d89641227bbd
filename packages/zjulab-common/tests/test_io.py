import json
import os

import pytest

from zjulab.common import (
    InputError,
    StoreError,
    atomic_directory,
    atomic_write,
    atomic_write_text,
    read_json,
    read_jsonl,
    recover_directory,
    write_json,
    write_jsonl,
)


def _visible(folder):
    """Entries of ``folder`` except the documented ``.NAME.lock`` files of directory stores."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_exception_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "f.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as fh:
            fh.write('{"v": 2, "half')
            raise RuntimeError("boom")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_unserialisable_json_leaves_target_untouched(tmp_path):
    target = tmp_path / "f.json"
    write_json(target, [1, 2])
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert read_json(target) == [1, 2]


def test_non_finite_floats_are_written_as_null(tmp_path):
    # Python's NaN/Infinity tokens are not JSON: a strict reader must be able to read the file
    target = tmp_path / "f.json"
    write_json(
        target, {"se": float("nan"), "rates": [1.5, float("inf"), -float("inf")], "t": (float("nan"),)}
    )
    text = target.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda tok: pytest.fail(f"non-standard token {tok}"))
    assert strict == {"se": None, "rates": [1.5, None, None], "t": [None]}
    rows = tmp_path / "r.jsonl"
    write_jsonl(rows, [{"x": float("nan")}, {"x": 2.0}])
    assert rows.read_text(encoding="utf-8") == '{"x": null}\n{"x": 2.0}\n'


def test_circular_value_is_a_serialization_error(tmp_path):
    from zjulab.common.errors import SerializationError

    loop: list = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="Circular reference"):
        write_json(tmp_path / "f.json", loop)
    assert not (tmp_path / "f.json").exists()


def test_bytes_mode_and_bad_mode(tmp_path):
    with atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(InputError, match="mode"):
        atomic_write(tmp_path / "x", "a")  # type: ignore[call-overload]


def test_jsonl_round_trip_unicode(tmp_path):
    rows = [{"q": "café ☕", "n": 1}, [1, 2, None], "plain"]
    assert write_jsonl(tmp_path / "r.jsonl", rows) == 3
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8").count("\n") == 3


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2,}\n', encoding="utf-8")
    with pytest.raises(StoreError, match=r"bad.jsonl:3: invalid JSON"):
        read_jsonl(p)


def test_read_json_errors(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "b.json").write_text('{\n  "a": 1\n  "b": 2}')
    with pytest.raises(StoreError, match=r"b.json:3:3: invalid JSON"):
        read_json(tmp_path / "b.json")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(StoreError, match="not UTF-8"):
        read_json(tmp_path / "latin.json")


def test_atomic_directory_swaps_whole_directory(tmp_path):
    store = tmp_path / "store"
    with atomic_directory(store) as d:
        (d / "a.txt").write_text("1")
    with atomic_directory(store) as d:
        (d / "b.txt").write_text("2")
    assert sorted(p.name for p in store.iterdir()) == ["b.txt"]
    assert _visible(tmp_path) == ["store"]


def test_atomic_directory_exception_keeps_previous(tmp_path):
    store = tmp_path / "store"
    with atomic_directory(store) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_directory(store) as d:
            (d / "a.txt").write_text("corrupt")
            raise ValueError
    assert (store / "a.txt").read_text() == "1"
    assert _visible(tmp_path) == ["store"]


def test_atomic_directory_recovers_interrupted_swap(tmp_path):
    store = tmp_path / "store"
    with atomic_directory(store) as d:
        (d / "a.txt").write_text("1")
    # simulate a crash between the two renames: the old copy is parked, target missing
    os.replace(store, tmp_path / ".store.old")
    with atomic_directory(store) as d:
        assert (store / "a.txt").read_text() == "1"  # recovered before the new write starts
        (d / "a.txt").write_text("2")
    assert json.loads("1") == 1 and (store / "a.txt").read_text() == "2"


def test_recover_directory_for_readers(tmp_path):
    store = tmp_path / "store"
    with atomic_directory(store) as d:
        (d / "a.txt").write_text("1")
    assert recover_directory(store) is False
    os.replace(store, tmp_path / ".store.old")
    assert recover_directory(store) is True
    assert (store / "a.txt").read_text() == "1"
