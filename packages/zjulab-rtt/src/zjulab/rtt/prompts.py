"""Prompts with rubrics: the training and evaluation data of RTT."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zjulab.rtt.errors import RubricError
from zjulab.rtt.rubrics import Rubric, parse_rubrics

__all__ = ["RubricPrompt", "iter_records", "load_rubric_prompts", "to_dataset_rows"]


@dataclass
class RubricPrompt:
    """A prompt with its rubrics.

    Attributes:
        key: Identifier of the prompt.
        prompt: The instruction text.
        rubrics: Its constraints.
        dropped: Instruction ids that no registered checker covers.
    """

    key: str
    prompt: str
    rubrics: list[Rubric]
    dropped: list[str] = field(default_factory=list)


def iter_records(path: str | os.PathLike[str], what: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed JSON)`` for each non-blank line of a JSONL file.

    Raises:
        RubricError: The file is missing or a line is not JSON (the message names the line).
    """
    p = Path(path)
    if p.is_dir():
        raise RubricError(f"{what} file {p} is a directory, not a JSONL file")
    if not p.is_file():
        raise RubricError(f"{what} file not found: {p}")
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RubricError(f"{p}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except ValueError as exc:
                raise RubricError(f"{p}:{lineno}: not JSON ({exc})") from exc


def load_rubric_prompts(path: str | os.PathLike[str]) -> list[RubricPrompt]:
    """Read a JSONL file of ``{"prompt": ..., "rubrics": [...], "key": ...}`` records.

    Each rubric is a :class:`~zjulab.rtt.rubrics.Rubric` dict, a JSON string, or plain text (a
    judge rubric).

    Raises:
        RubricError: The file is missing or a line is malformed (the message names the line).
    """
    out = []
    for lineno, rec in iter_records(path, "rubric prompt"):
        if not isinstance(rec, dict):
            raise RubricError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        try:
            prompt = rec["prompt"]
            rubrics = parse_rubrics(rec.get("rubrics"))
        except (ValueError, KeyError, TypeError) as exc:
            raise RubricError(f"{path}:{lineno}: {exc}") from exc
        if not isinstance(prompt, str) or not prompt.strip():
            raise RubricError(f"{path}:{lineno}: prompt must be non-empty text")
        out.append(RubricPrompt(str(rec.get("key", lineno)), prompt, rubrics))
    return out


def to_dataset_rows(prompts: Sequence[RubricPrompt], *, conversational: bool = True) -> list[dict[str, Any]]:
    """Rows for a ``datasets.Dataset``: ``prompt`` and ``rubrics`` (a list of JSON strings).

    Args:
        prompts: Prompts with rubrics.
        conversational: Wrap each prompt as a one-turn user conversation (TRL then applies the
            chat template).
    """
    rows = []
    for rp in prompts:
        prompt: Any = [{"role": "user", "content": rp.prompt}] if conversational else rp.prompt
        rows.append({"prompt": prompt, "rubrics": [r.to_json() for r in rp.rubrics], "key": rp.key})
    return rows
