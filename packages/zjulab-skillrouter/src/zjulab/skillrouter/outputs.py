"""Writing trained models: never into a folder the library did not create, always atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from zjulab.common.io import atomic_directory
from zjulab.skillrouter.errors import IndexExistsError, NotAnIndexError

__all__ = ["MODEL_MARKER", "check_model_dir", "save_model_dir"]

MODEL_MARKER = ".zjulab-skillrouter-model"
"""Marks a folder as a model this library trained (a later run may replace it with ``overwrite``)."""


def check_model_dir(path: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an output folder that is not new, empty, or (with ``overwrite``) one of our models.

    Raises:
        NotAnIndexError: ``path`` is a file or a non-empty folder this library did not write.
        IndexExistsError: ``path`` holds a model from an earlier run and ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotAnIndexError(f"{target} exists and is not a folder; refusing to replace it")
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
