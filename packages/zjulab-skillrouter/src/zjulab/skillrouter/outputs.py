"""Writing trained models: never into a folder the library did not create, always atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from zjulab.common.io import atomic_directory
from zjulab.skillrouter.errors import IndexExistsError, NotAnIndexError

__all__ = ["MODEL_MARKER", "check_model_dir", "foreign_leftover", "save_model_dir"]

MODEL_MARKER = ".zjulab-skillrouter-model"
"""Marks a folder as a model this library trained (a later run may replace it with ``overwrite``)."""


def foreign_leftover(
    target: str | os.PathLike[str], marker: str, own_files: frozenset[str] = frozenset()
) -> Path | None:
    """``.NAME.old`` beside ``target`` when it exists and is not a folder this library wrote.

    The atomic swap parks the previous folder at ``.NAME.old`` for a moment, and the next save or
    load restores or removes what a kill left there. A ``.NAME.old`` without ``marker`` inside
    (a user's own backup, say) is not such a leftover: callers refuse to save, and load without
    tidying, rather than let the swap delete or move it. A folder holding nothing but names from
    ``own_files`` (the files one save writes) is also a leftover: a kill while the swap was
    removing it may have taken the marker first.
    """
    path = Path(target)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    old = real.with_name(f".{real.name}.old")
    if not (old.exists() or old.is_symlink()):
        return None
    if old.is_dir() and not old.is_symlink():
        if (old / marker).is_file():
            return None
        try:
            names = {e.name for e in old.iterdir()}
        except OSError:
            return old
        if own_files and names <= own_files and all((old / n).is_file() for n in names):
            return None
    return old


def _refuse_foreign_leftover(target: Path, marker: str, own_files: frozenset[str] = frozenset()) -> None:
    old = foreign_leftover(target, marker, own_files)
    if old is not None:
        raise NotAnIndexError(
            f"{old} exists and was not written by this library (no {marker} inside); saving "
            f"{target} would replace or remove it. Move or rename it first."
        )


def check_model_dir(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an output folder that is not new, empty, or (with ``overwrite``) one of our models.

    Raises:
        NotAnIndexError: ``path`` is a file or a non-empty folder this library did not write, or
            ``.NAME.old`` beside it is not one of its leftovers (:func:`foreign_leftover`).
        IndexExistsError: ``path`` holds a model from an earlier run and ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotAnIndexError(f"{target} exists and is not a folder; refusing to replace it")
    _refuse_foreign_leftover(target, MODEL_MARKER)
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not (target / MODEL_MARKER).is_file():
        raise NotAnIndexError(
            f"{target} is a non-empty folder that holds no model trained here (no {MODEL_MARKER}); "
            "refusing to write into it. Choose a new or empty output folder."
        )
    if not overwrite:
        raise IndexExistsError(
            f"{target} holds a model from an earlier run; pass overwrite=True (--overwrite)"
        )


def save_model_dir(path: str | os.PathLike[str], write: Callable[[Path], None], overwrite: bool) -> Path:
    """Check ``path`` (:func:`check_model_dir`), let ``write`` fill a temporary folder, swap it in."""
    target = Path(path)
    check_model_dir(target, overwrite)
    with atomic_directory(target) as tmp:
        write(tmp)
        (tmp / MODEL_MARKER).write_text("zjulab-skillrouter model\n", encoding="utf-8")
    return target
