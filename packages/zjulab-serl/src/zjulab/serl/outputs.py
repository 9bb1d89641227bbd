"""Where zjulab-serl may write: never over a user's own folder or file.

Training writes into ``output_dir`` (checkpoints, the model, its tokenizer, a model card named
``README.md``, the judge completions table), replacing files of those names. A training folder
is therefore used only when it does not exist yet, is empty, or holds the run marker
``zjulab-serl-run.json`` that :func:`claim_output_dir` leaves in every folder a SERL run
writes into: an earlier run's folder can be trained into again (or resumed from), a project
folder, a model folder or a folder of notes cannot.

The files the commands write (``judge -o``, ``generate -o``, ``eval --annotations``) replace
an existing file only when it is an earlier output of this library (:func:`check_replaceable`)
or when ``--overwrite`` is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zjulab.serl.errors import SERLConfigError, SERLStoreError

__all__ = ["RUN_MARKER", "check_output_dir", "check_replaceable", "claim_output_dir"]

RUN_MARKER = "zjulab-serl-run.json"
"""File left in every training folder a SERL run writes into."""

_MARKER_FORMAT = "zjulab-serl/run"


def _is_marker(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == _MARKER_FORMAT


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse a training folder that holds files no SERL run wrote.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        SERLConfigError: ``path`` is a file, or a non-empty folder without the run marker.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SERLConfigError(f"output_dir {p} is a file, not a folder")
    if not p.is_dir():
        return p
    # the marker itself and its in-flight temporary files (another process claiming the folder)
    entries = sorted(e for e in os.listdir(p) if e != RUN_MARKER and not e.startswith(f".{RUN_MARKER}."))
    if entries and not _is_marker(p / RUN_MARKER):
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise SERLConfigError(
            f"output_dir {p} already holds files that no SERL run wrote ({shown}); training would "
            f"replace files there (README.md, config.json, checkpoints). Choose a new or empty folder"
        )
    return p


def claim_output_dir(path: str | os.PathLike[str]) -> Path:
    """Check ``path`` (see :func:`check_output_dir`), create it and leave the run marker in it."""
    from zjulab.common.io import write_json

    p = check_output_dir(path)
    if not _is_marker(p / RUN_MARKER):
        write_json(p / RUN_MARKER, {"format": _MARKER_FORMAT, "version": 1})
    return p


def check_replaceable(
    path: str | os.PathLike[str], written_here: Callable[[Any], bool], *, overwrite: bool = False
) -> Path:
    """Refuse to write ``path`` over a folder, or over a file this library did not write.

    Args:
        path: The target file.
        written_here: Says, from the parsed JSON of the existing file, whether it is an earlier
            output of this library.
        overwrite: Replace any existing file (the user said so).

    Raises:
        SERLStoreError: ``path`` is a folder, or an existing file that is not an earlier output.
    """
    p = Path(path)
    if p.is_dir():
        raise SERLStoreError(f"{p}: is a folder, not a file")
    if overwrite or not p.exists():
        return p
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        ours = bool(written_here(doc))
    except (OSError, UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise SERLStoreError(
            f"{p}: exists and is not an earlier output of zjulab-serl; choose another path or pass --overwrite"
        )
    return p
