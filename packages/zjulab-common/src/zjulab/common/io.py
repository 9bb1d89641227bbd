"""Atomic file writes and JSON / JSONL helpers that respect the user's files.

Every persisted artefact in zjulab goes through :func:`atomic_write` or :func:`atomic_directory`:
the data is written to a temporary sibling, flushed and fsynced, then moved over the target with
:func:`os.replace`. A crash, a kill or an exception at any point leaves either the old content or
the new one, never a torn mix, and the temporary siblings a killed writer left behind are removed
by the next write to the same target.

What a write keeps of the user's file:

* a replaced file keeps its permission bits, and its group (and, for root, its owner); a new
  file gets ``0666 & ~umask`` (what ``open`` would give it), not ``mkstemp``'s 0600;
* a symlink is written *through*: the link stays and its target gets the new content, atomically;
* a symlinked directory store (``index -> index-v1``) is rebuilt next to its target, and the
  link is left pointing where it pointed.

:func:`atomic_directory` and :func:`recover_directory` take a cross-process lock (``filelock``)
on ``.NAME.lock`` beside the directory, so two writers never interleave their swaps and a reader's
recovery never runs in the middle of a writer's swap; readers that must see one consistent
version hold :func:`directory_lock` while they read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

from zjulab.common.errors import InputError, StoreError

__all__ = [
    "atomic_directory",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "directory_lock",
    "place_new_file",
    "read_json",
    "read_jsonl",
    "recover_directory",
    "remove_stale_temps",
    "temp_dir_beside",
    "write_json",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

#: Temporary siblings are named ``.NAME.<pid>.<random>.tmp`` so a later writer can tell a dead
#: writer's leftovers (its process is gone) from a live writer's work in progress.
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
#: Leftovers of writers that did not record their pid are removed once this old (seconds).
_LEGACY_TMP_AGE = 3600.0
_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:  # portable fallback: set and restore, serialised within the process
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _new_mode(existing: Path, *, directory: bool = False) -> int:
    """Permission bits for a file or directory that replaces ``existing`` (or is new)."""
    try:
        return stat.S_IMODE(existing.stat().st_mode)
    except OSError:
        return (0o777 if directory else 0o666) & ~_umask()


def _keep_owner(existing: Path, fd: int | None = None, path: Path | None = None) -> None:
    """Give the new file or directory the owner and group of the one it replaces.

    The group is what lets a team keep writing a shared 0664 file: a rewrite by a member whose
    primary group is another would otherwise hand the file to that group. The owner can only be
    kept by root; what the process may not change is left as the OS made it.
    """
    try:
        st = existing.stat()
    except OSError:
        return  # a new file: the OS's owner and group are right
    for ids in ((st.st_uid, st.st_gid), (-1, st.st_gid)):
        try:
            if fd is not None:
                os.fchown(fd, *ids)
            elif path is not None:
                os.chown(path, *ids)
            return
        except (PermissionError, AttributeError, NotImplementedError):
            continue
        except OSError:
            return


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our own threads' work in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return True
    return True


def remove_stale_temps(target: str | os.PathLike[str]) -> int:
    """Remove the temporary siblings of ``target`` that killed writers left behind.

    A sibling ``.NAME.<pid>.<random>.tmp`` is stale when process ``pid`` no longer exists; one
    without a pid (written by an older version) when it is more than an hour old. Live writers'
    temporaries are never touched.

    Returns:
        How many were removed.
    """
    path = Path(target)
    parent = path.parent
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    legacy = re.compile(r"^\." + re.escape(path.name) + r"\.[A-Za-z0-9_]+\.tmp$")
    now = time.time()
    for entry in entries:
        m = _TMP.match(entry.name)
        stale = False
        if m and m.group("name") == path.name:
            stale = not _pid_alive(int(m.group("pid")))
        elif legacy.match(entry.name):
            with contextlib.suppress(OSError):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_TMP_AGE
        if not stale:
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
            logger.info("removed %s, left behind by an interrupted write", entry.path)
    return removed


def _resolve_target(path: Path) -> Path:
    """Where a write to ``path`` must land: through any symlinks, to the real file."""
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


#: errno values of a write the system refuses: permission, and a read-only file system
_REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _refusal(exc: OSError) -> str:
    return "read-only file system" if exc.errno == errno.EROFS else "permission denied"


def _make_parent(target: Path) -> None:
    """Create ``target``'s folder; a file in the way or a refused write is a ``StoreError``.

    ``StoreError`` is an ``OSError``: code that caught the bare ``OSError`` still does.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in [target.parent, *target.parent.parents] if p.is_file()), target.parent)
        raise StoreError(f"{target}: cannot be written, {blocker} is a file, not a folder") from exc
    except OSError as exc:
        if exc.errno not in _REFUSED:
            raise
        raise StoreError(f"{target}: {_refusal(exc)} creating {exc.filename or target.parent}") from exc


def _temp_dir_beside(target: Path) -> str:
    """A new temporary directory beside ``target``."""
    return _beside("mkdtemp", target)


def _mkstemp_beside(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target``: ``(fd, name)``."""
    return _beside("mkstemp", target)


def _beside(kind: str, target: Path) -> Any:
    """``tempfile.KIND`` beside ``target``, zjulab-named; a refused write is a ``StoreError``."""
    try:
        return getattr(tempfile, kind)(prefix=_tmp_prefix(target), suffix=".tmp", dir=target.parent)
    except OSError as exc:
        if exc.errno not in _REFUSED:
            raise
        raise StoreError(f"{target}: {_refusal(exc)} writing in {target.parent}") from exc


def temp_dir_beside(target: str | os.PathLike[str]) -> Path:
    """A new, empty temporary folder beside ``target`` for a writer that builds ``target`` itself.

    Named ``.NAME.<pid>.<random>.tmp``, as every zjulab temporary, so that if the writer is killed
    the next writer of ``target`` (any of them: :func:`remove_stale_temps` runs first) removes it.
    The caller removes the folder when it is done, on success and on failure.

    Raises:
        StoreError: The parent folder is not writable.
    """
    path = Path(target)
    _make_parent(path)
    remove_stale_temps(path)
    return Path(_temp_dir_beside(path))


def place_new_file(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> bool:
    """Give the finished file ``source`` the name ``target`` unless ``target`` exists; never replace it.

    A hard link where the file system has them (it fails if ``target`` appeared meanwhile);
    elsewhere ``target`` is claimed with ``O_EXCL`` and ``source`` renamed onto that claim, so only
    the claim is replaced. ``source`` is normally in a folder from :func:`temp_dir_beside`, which
    the caller removes either way.

    Returns:
        True when ``target`` now holds ``source``'s file; False when ``target`` already existed
        (left as it was).
    """
    src, dest = Path(source), Path(target)
    try:
        os.link(src, dest)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system
        try:
            os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            return False
        os.replace(src, dest)
        return True


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


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
        file is removed and the target keeps its previous content. A replaced file keeps its
        permission bits, a new one follows the umask, and a symlink is written through (the
        link stays, its target is replaced atomically).

    Raises:
        InputError: ``mode`` is not ``"w"`` or ``"wb"``, or ``path`` is a directory.
    """
    if mode not in ("w", "wb"):
        raise InputError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    return _atomic_write(Path(path), mode, encoding)


@contextlib.contextmanager
def _atomic_write(path: Path, mode: str, encoding: str) -> Iterator[IO[Any]]:
    if path.is_dir() and not path.is_symlink():
        raise InputError(f"{path}: is a directory, not a file")
    path = _resolve_target(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    _make_parent(path)
    remove_stale_temps(path)
    file_mode = _new_mode(path)
    fd, tmp_name = _mkstemp_beside(path)
    tmp = Path(tmp_name)
    try:
        _keep_owner(path, fd=fd)
        os.fchmod(fd, file_mode)  # after fchown, which may clear set-id bits
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
    raises :class:`~zjulab.common.errors.SerializationError` (also a ``TypeError``) naming the
    file and the value's type, and leaves the target untouched.

    A float that is NaN or infinite is written as ``null``. JSON has no such numbers: Python's
    ``NaN``/``Infinity`` tokens are refused by strict readers (``jq``, JavaScript's
    ``JSON.parse``, Go, Rust's serde), and the values the libraries produce this way are
    undefined statistics (a standard error of one item, a rate over no valid items), which
    ``null``, "no value", states. Refusing them instead would lose a finished run at its last
    save.
    """
    text = _dumps(obj, path, indent=indent)
    atomic_write_text(path, text + "\n")


def _dumps(obj: Any, path: str | os.PathLike[str], *, indent: int | None = None) -> str:
    from zjulab.common.errors import SerializationError

    try:
        try:
            return json.dumps(obj, ensure_ascii=False, indent=indent, allow_nan=False)
        except ValueError as exc:  # NaN or +-inf somewhere (the rare case costs a second pass)
            if "out of range float" not in str(exc).lower():
                raise
            return json.dumps(_finite(obj), ensure_ascii=False, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{path}: cannot be written as JSON: {exc}") from exc


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (JSON's ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


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
    except IsADirectoryError as exc:
        raise StoreError(f"{p}: is a directory, not a JSON file") from exc
    except PermissionError as exc:
        raise StoreError(f"{p}: permission denied") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{p}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Any]) -> int:
    """Write one JSON document per line, atomically. Returns the number of rows written.

    Raises:
        SerializationError: A row cannot be encoded as JSON (nothing is written).
    """
    n = 0
    with atomic_write(path, "w") as fh:
        for row in rows:
            fh.write(_dumps(row, f"{path}: row {n + 1}"))
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
    except IsADirectoryError as exc:
        raise StoreError(f"{p}: is a directory, not a JSONL file") from exc
    except PermissionError as exc:
        raise StoreError(f"{p}: permission denied") from exc
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


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def directory_lock(path: str | os.PathLike[str], *, timeout: float = -1) -> Iterator[None]:
    """Hold the cross-process lock that :func:`atomic_directory` swaps under.

    Readers that must see one consistent version of a directory store (every file from the same
    save) read inside this context. The lock file is ``.NAME.lock`` beside the directory.

    Args:
        path: The directory (it need not exist yet).
        timeout: Seconds to wait; ``-1`` waits forever.

    Raises:
        StoreError: The lock could not be taken within ``timeout``.
    """
    from filelock import FileLock, Timeout

    target = _resolve_target(Path(path))
    _make_parent(target)
    lock = FileLock(str(_lock_path(target)), timeout=timeout, mode=_new_mode(_lock_path(target)))
    try:
        with lock:
            yield
    except Timeout as exc:
        raise StoreError(f"{target}: another process holds its lock ({_lock_path(target)})") from exc


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it into place.

    The body writes files into the yielded temporary directory. On success the previous
    directory (if any) is replaced in two renames, ``path -> .path.old`` then ``tmp -> path``,
    under the directory's cross-process lock (:func:`directory_lock`), so concurrent writers
    take turns and a concurrent :func:`recover_directory` never runs between the two renames.
    A kill between them leaves the old directory under ``.path.old``, restored by the next
    writer or reader. On an exception nothing at ``path`` changes. Temporaries that killed
    writers left beside ``path`` are removed.

    ``path`` may be a symlink to a directory (``index -> index-v1``): the new build is made
    beside the link's target and swapped in there, and the link is kept.

    Args:
        path: The directory to create or replace.

    Yields:
        The temporary directory to populate.

    Raises:
        InputError: ``path`` exists and is not a directory.
    """
    target = _resolve_target(Path(path))
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a directory")
    _make_parent(target)
    with directory_lock(target):
        _recover(target)
        remove_stale_temps(target)
        dir_mode = _new_mode(target, directory=True)
    tmp = Path(_temp_dir_beside(target))
    _keep_owner(target, path=tmp)
    os.chmod(tmp, dir_mode)  # mkdtemp makes 0700; keep the old directory's bits or mkdir's
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        with directory_lock(target):
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _recover(target: Path) -> bool:
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        logger.warning("recovering %s from an interrupted write", target)
        os.replace(old, target)
        return True
    if target.exists() and old.exists():
        # the swap finished but the old copy was not yet removed when the writer died
        shutil.rmtree(old, ignore_errors=True)
    return False


def recover_directory(path: str | os.PathLike[str]) -> bool:
    """Restore a directory whose :func:`atomic_directory` swap was cut between its two renames.

    Readers call this before opening a store, so a kill between ``path -> .path.old`` and
    ``tmp -> path`` gives back the last committed state rather than an empty store. It takes
    the directory's lock, so it never interferes with a swap in progress.

    Returns:
        Whether the previous copy was restored.
    """
    target = _resolve_target(Path(path))
    old = target.with_name(f".{target.name}.old")
    if not old.exists():  # the common case costs no lock
        return False
    with directory_lock(target):
        return _recover(target)
