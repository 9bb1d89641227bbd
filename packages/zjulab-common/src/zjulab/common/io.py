"""Atomic file writes and JSON / JSONL helpers.

Every persisted artefact in zjulab goes through :func:`atomic_write`: the data is written to a
temporary file in the same directory, flushed and fsynced, then moved over the target with
:func:`os.replace`. A crash or an exception at any point leaves either the old file or the new
one, never a torn mix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

from zjulab.common.errors import InputError, StoreError

__all__ = [
    "atomic_directory",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_json",
    "read_jsonl",
    "recover_directory",
    "write_json",
    "write_jsonl",
]

logger = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    """Fsync a directory so a rename inside it survives a power loss (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["w"] = "w", encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[str]]: ...


@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["wb"], encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[bytes]]: ...


def atomic_write(
    path: str | os.PathLike[str], mode: str = "w", encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Open ``path`` for writing so that the file is replaced only on success.

    Args:
        path: Target file. Its parent directory is created if missing.
        mode: ``"w"`` for text, ``"wb"`` for bytes.
        encoding: Text encoding (ignored for bytes).

    Returns:
        A context manager yielding a file object. If the ``with`` body raises, the temporary
        file is removed and the target keeps its previous content.

    Raises:
        InputError: ``mode`` is not ``"w"`` or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise InputError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    return _atomic_write(Path(path), mode, encoding)


@contextlib.contextmanager
def _atomic_write(path: Path, mode: str, encoding: str) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if mode == "wb":
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline="")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON (UTF-8, keys kept in order) and write it atomically.

    The object is serialised before the file is opened, so a value that JSON cannot encode
    raises ``TypeError`` and leaves the target untouched.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=indent)
    atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file.

    Raises:
        StoreError: The file is missing or is not valid JSON (the message names the file,
            line and column).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise StoreError(f"{p}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise StoreError(f"{p}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{p}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write one JSON document per line, atomically. Returns the number of rows written."""
    n = 0
    with atomic_write(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike[str], *, skip_blank: bool = True) -> list[Any]:
    """Read a JSONL file into a list.

    Raises:
        StoreError: The file is missing, or a line is not valid JSON (the message names the
            file and the 1-based line number).
    """
    p = Path(path)
    rows: list[Any] = []
    try:
        fh = p.open(encoding="utf-8")
    except FileNotFoundError as exc:
        raise StoreError(f"{p}: no such file") from exc
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if skip_blank and not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise StoreError(f"{p}:{lineno}: invalid JSON: {exc.msg}") from exc
        except UnicodeDecodeError as exc:
            raise StoreError(f"{p}: not UTF-8 ({exc.reason})") from exc
    return rows


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it into place.

    The body writes files into the yielded temporary directory. On success the previous
    directory (if any) is replaced in two renames: ``path -> path.old-*``, ``tmp -> path``;
    a crash between them leaves the complete new directory under ``tmp`` and the old one under
    ``.old``, and :func:`atomic_directory` recovers the old one on the next call if ``path``
    itself is missing. On an exception nothing at ``path`` changes.

    Args:
        path: The directory to create or replace.

    Yields:
        The temporary directory to populate.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the final directory should look like mkdir's
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_directory(path: str | os.PathLike[str]) -> bool:
    """Restore a directory whose :func:`atomic_directory` swap was cut between its two renames.

    Readers call this before opening a store, so a crash between ``path -> .path.old`` and
    ``tmp -> path`` gives back the last committed state rather than an empty store.

    Returns:
        Whether the previous copy was restored.
    """
    target = Path(path)
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        logger.warning("recovering %s from an interrupted write", target)
        os.replace(old, target)
        return True
    return False
