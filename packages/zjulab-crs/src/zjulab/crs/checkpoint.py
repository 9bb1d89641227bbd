"""Save and load trained task models as versioned directories (atomic writes).

A checkpoint loads whole or not at all: ``crs.json`` lists every file of the directory with its
SHA-256, and :func:`read_checkpoint` refuses (:class:`~zjulab.crs.errors.CheckpointError`) a
checkpoint whose listed file is missing or whose bytes differ, or whose ``backbone/`` holds a
file the manifest does not list.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from zjulab.common.errors import SchemaVersionError
from zjulab.common.io import atomic_directory, read_json, write_json
from zjulab.crs.config import TrainConfig
from zjulab.crs.errors import CheckpointError, NotTrainedError

__all__ = ["FORMAT_VERSION", "read_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Version of the checkpoint layout (``crs.json`` with a file manifest + ``backbone/`` + ``head.pt``)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): _sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "crs.json"
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    task: str,
    config: TrainConfig,
    backbone: Any,
    tokenizer: Any,
    head_state: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory.

    The layout is ``backbone/`` (``save_pretrained``), ``head.pt`` and ``crs.json`` (format
    version, task, config, label vocabularies and ``files``: every other file's SHA-256). The directory is built aside and swapped in, so
    a crash never leaves a half-written checkpoint.
    """
    target = Path(path)
    with atomic_directory(target) as tmp:
        backbone.save_pretrained(tmp / "backbone")
        tokenizer.save_pretrained(tmp / "backbone")
        if head_state is not None:
            torch.save({k: v.detach().cpu() for k, v in head_state.items()}, tmp / "head.pt")
        write_json(
            tmp / "crs.json",
            {
                "format_version": FORMAT_VERSION,
                "task": task,
                "config": asdict(config),
                "meta": meta or {},
                "has_head": head_state is not None,
                "files": _manifest(tmp),
            },
        )
    logger.info("saved %s model to %s", task, target)
    return target


def read_checkpoint(
    path: str | os.PathLike[str], task: str
) -> tuple[dict[str, Any], dict[str, Any], Path, dict[str, torch.Tensor] | None]:
    """Read what :func:`save_checkpoint` wrote.

    Returns:
        ``(config_dict, meta, backbone_dir, head_state_or_None)``.

    Raises:
        NotTrainedError: No checkpoint at ``path``.
        SchemaVersionError: The checkpoint has another format version.
        UnknownLabelError: The checkpoint belongs to another task.
        CheckpointError: A listed file is missing or its hash differs, a file under
            ``backbone/`` is not listed, or ``head.pt`` is missing from a checkpoint that was
            saved with one.
    """
    from zjulab.crs.errors import UnknownLabelError

    root = Path(path)
    if not (root / "crs.json").is_file():
        raise NotTrainedError(f"{root}: no checkpoint (crs.json missing)")
    info = read_json(root / "crs.json")
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise SchemaVersionError(
            f"{root}: checkpoint format {version!r}, this library reads {FORMAT_VERSION}"
        )
    if info.get("task") != task:
        raise UnknownLabelError(f"{root}: checkpoint is for task {info.get('task')!r}, not {task!r}")
    files = info.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{root}: crs.json lists no files; the checkpoint cannot be verified")
    for rel, digest in files.items():
        f = root / rel
        if not f.is_file():
            raise CheckpointError(f"{root}: checkpoint file {rel} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"{root}: checkpoint file {rel} does not match its recorded SHA-256")
    backbone = root / "backbone"
    if backbone.is_dir():
        stray = sorted(
            p.relative_to(root).as_posix()
            for p in backbone.rglob("*")
            if p.is_file() and p.relative_to(root).as_posix() not in files
        )
        if stray:
            # from_pretrained reads what it finds (an index, an adapter): an unlisted file can
            # change what loads, so the directory is not the checkpoint that was saved
            raise CheckpointError(f"{root}: checkpoint file(s) {stray} are not in its manifest (crs.json)")
    has_head = bool(info.get("has_head"))
    if has_head and "head.pt" not in files:
        raise CheckpointError(f"{root}: checkpoint was saved with a head but head.pt is not listed")
    head = root / "head.pt"
    state = torch.load(head, map_location="cpu", weights_only=True) if has_head else None
    return dict(info["config"]), dict(info.get("meta", {})), root / "backbone", state
