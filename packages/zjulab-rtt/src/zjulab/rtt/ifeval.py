"""IFEval prompts as a source of verifiable rubrics.

Each IFEval record has a prompt and a list of instruction ids with arguments; each supported
instruction becomes a ``"check"`` :class:`~zjulab.rtt.rubrics.Rubric`. The file is read by path
(``input_data.jsonl`` of google-research's IFEval, Apache-2.0); nothing is bundled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from zjulab.rtt.errors import RubricError
from zjulab.rtt.prompts import RubricPrompt, iter_records
from zjulab.rtt.rubrics import CHECKERS, Rubric

__all__ = ["load_ifeval"]

logger = logging.getLogger(__name__)


def load_ifeval(
    path: str | os.PathLike[str],
    *,
    unsupported: Literal["skip_prompt", "drop_rubric"] = "skip_prompt",
    limit: int | None = None,
) -> list[RubricPrompt]:
    """Read IFEval ``input_data.jsonl`` into prompts with checker rubrics.

    Args:
        path: The JSONL file.
        unsupported: What to do with an instruction no checker covers: leave the whole prompt
            out (``"skip_prompt"``, so every kept prompt is fully verifiable) or drop only that
            instruction (``"drop_rubric"``).
        limit: Stop after this many kept prompts.

    Returns:
        The kept prompts, in file order.

    Raises:
        RubricError: The file is missing or a line is not a valid IFEval record (the message
            names the line).
    """
    p = Path(path)
    out: list[RubricPrompt] = []
    for lineno, rec in iter_records(p, "IFEval"):
        if not isinstance(rec, dict):
            raise RubricError(f"{p}:{lineno}: not an IFEval record (a JSON {type(rec).__name__})")
        try:
            ids: Sequence[str] = rec["instruction_id_list"]
            kwargs: Sequence[dict[str, Any]] = rec["kwargs"]
            prompt = str(rec["prompt"])
            key = str(rec.get("key", lineno))
        except (KeyError, TypeError) as exc:
            raise RubricError(f"{p}:{lineno}: not an IFEval record ({exc!r})") from exc
        if not isinstance(ids, list) or not isinstance(kwargs, list):
            raise RubricError(f"{p}:{lineno}: instruction_id_list and kwargs must be lists")
        if len(ids) != len(kwargs):
            raise RubricError(f"{p}:{lineno}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
        rubrics: list[Rubric] = []
        dropped: list[str] = []
        for iid, kw in zip(ids, kwargs):
            if iid not in CHECKERS:
                dropped.append(iid)
                continue
            clean = {k: v for k, v in (kw or {}).items() if v is not None}
            if iid == "combination:repeat_prompt" and "prompt_to_repeat" not in clean:
                clean["prompt_to_repeat"] = prompt
            try:
                rubrics.append(Rubric.check(iid, **clean))
            except RubricError as exc:
                raise RubricError(f"{p}:{lineno}: {exc}") from exc
        if (dropped and unsupported == "skip_prompt") or not rubrics:
            continue
        out.append(RubricPrompt(key, prompt, rubrics, dropped))
        if limit is not None and len(out) >= limit:
            break
    logger.info("read %d IFEval prompts with verifiable rubrics from %s", len(out), p)
    return out
