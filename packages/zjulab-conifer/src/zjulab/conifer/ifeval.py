"""IFEval scoring: prompt- and instruction-level accuracy, strict and loose.

IFEval (Zhou et al., 2023) has 541 prompts, each carrying one to three verifiable instructions.
A response *follows a prompt* when it follows every instruction of it. Four numbers summarise a
run: the share of prompts followed and the share of instructions followed, each in strict and
in loose mode (see :mod:`zjulab.conifer.checkers`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zjulab.conifer._lines import file_lines
from zjulab.conifer.checkers import CheckerRegistry, default_registry
from zjulab.conifer.errors import ConiferInputError

__all__ = [
    "IFEvalPrompt",
    "IFEvalResult",
    "evaluate_ifeval",
    "generate_ifeval",
    "load_ifeval",
    "load_prompt_texts",
    "per_type_table",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IFEvalPrompt:
    """One IFEval prompt.

    Attributes:
        key: IFEval's integer key.
        prompt: The prompt text.
        instruction_id_list: Instruction ids, one per instruction.
        kwargs: Arguments of each instruction (same order).
    """

    key: int
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[Mapping[str, Any], ...]


def load_ifeval(path: str | os.PathLike[str]) -> list[IFEvalPrompt]:
    """Read IFEval's ``input_data.jsonl``.

    Raises:
        ConiferInputError: Missing file, bad JSON or a row without the expected fields (the
            message names the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise ConiferInputError(f"{p}: no such IFEval file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConiferInputError(f"{p}:{line}: not UTF-8 (byte {data[exc.start]:#04x})") from None
    out: list[IFEvalPrompt] = []
    for lineno, line_text in enumerate(file_lines(text), 1):
        if not line_text.strip():
            continue
        try:
            row = json.loads(line_text)
            ids_raw, kws_raw = row["instruction_id_list"], row["kwargs"]
            if not isinstance(ids_raw, list) or not all(isinstance(x, str) for x in ids_raw):
                raise TypeError("instruction_id_list must be a list of strings")
            if not isinstance(kws_raw, list) or not all(isinstance(k, dict) for k in kws_raw):
                raise TypeError("kwargs must be a list of objects")
            if not isinstance(row["prompt"], str) or isinstance(row["key"], bool):
                raise TypeError("prompt must be a string and key an integer")
            ids = tuple(ids_raw)
            kws = tuple(dict(k) for k in kws_raw)
            item = IFEvalPrompt(int(row["key"]), row["prompt"], ids, kws)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConiferInputError(f"{p}:{lineno}: not an IFEval row ({exc})") from None
        if len(ids) != len(kws):
            raise ConiferInputError(f"{p}:{lineno}: {len(ids)} instruction ids but {len(kws)} kwargs")
        out.append(item)
    if not out:
        raise ConiferInputError(f"{p}: no IFEval prompts")
    return out


def load_prompt_texts(path: str | os.PathLike[str]) -> list[str]:
    """Prompt texts from a JSONL file (field ``prompt``, as IFEval's) or a text file (one a line).

    Raises:
        ConiferInputError: Missing or non-UTF-8 file, bad JSON, a row without a string
            ``prompt``, or no prompt at all (the message names the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise ConiferInputError(f"{p}: no such prompt file")
    try:
        lines = file_lines(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConiferInputError(f"{p}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    out: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if p.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConiferInputError(f"{p}:{lineno}: invalid JSON: {exc.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ConiferInputError(f"{p}:{lineno}: row has no string 'prompt'")
            out.append(row["prompt"])
        else:
            out.append(line)
    if not out:
        raise ConiferInputError(f"{p}: no prompts")
    return out


@dataclass
class IFEvalResult:
    """Scores of one IFEval run.

    Attributes:
        prompt_strict: Share of prompts whose every instruction is followed (strict).
        prompt_loose: The same in loose mode.
        instruction_strict: Share of all instructions followed (strict).
        instruction_loose: The same in loose mode.
        num_prompts: Prompts scored.
        num_instructions: Instructions scored.
        details: Per prompt: key, prompt, instruction ids, strict and loose booleans.
    """

    prompt_strict: float
    prompt_loose: float
    instruction_strict: float
    instruction_loose: float
    num_prompts: int
    num_instructions: int
    details: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, float | int]:
        """The four accuracies and the counts."""
        return {
            "prompt_strict": self.prompt_strict,
            "prompt_loose": self.prompt_loose,
            "instruction_strict": self.instruction_strict,
            "instruction_loose": self.instruction_loose,
            "num_prompts": self.num_prompts,
            "num_instructions": self.num_instructions,
        }


def _response_lookup(
    responses: Mapping[Any, str] | Sequence[Any], prompts: Sequence[IFEvalPrompt]
) -> list[str]:
    if isinstance(responses, Mapping):
        out = []
        for p in prompts:
            found = next((k for k in (p.prompt, p.key, str(p.key)) if k in responses), None)
            if found is not None and not isinstance(responses[found], str):
                raise ConiferInputError(
                    f"the response for IFEval prompt key {p.key} must be a string, got {type(responses[found]).__name__}"
                )
            if p.prompt in responses:
                out.append(responses[p.prompt])
            elif p.key in responses:
                out.append(responses[p.key])
            elif str(p.key) in responses:
                out.append(responses[str(p.key)])
            else:
                raise ConiferInputError(f"no response for IFEval prompt key {p.key}: {p.prompt[:60]!r}")
        return out
    items = list(responses)
    if items and isinstance(items[0], Mapping):
        table: dict[Any, str] = {}
        for i, row in enumerate(items):
            if "response" not in row or not ({"prompt", "key"} & set(row)):
                raise ConiferInputError(f"response row {i} needs 'response' and 'prompt' or 'key'")
            if row.get("answered") is False:
                raise ConiferInputError(
                    f"response row {i} was never answered (written by an incomplete generate-ifeval "
                    "run); run generate-ifeval again to ask the prompts still missing"
                )
            table[row.get("prompt", row.get("key"))] = row["response"]
        return _response_lookup(table, prompts)
    if len(items) != len(prompts):
        raise ConiferInputError(f"{len(items)} responses for {len(prompts)} prompts")
    for i, r in enumerate(items):
        if not isinstance(r, str):
            raise ConiferInputError(f"response {i} must be a string, got {type(r).__name__}")
    return list(items)


def evaluate_ifeval(
    responses: Mapping[Any, str] | Sequence[Any],
    prompts: str | os.PathLike[str] | Sequence[IFEvalPrompt],
    *,
    registry: CheckerRegistry | None = None,
) -> IFEvalResult:
    """Score responses on IFEval prompts.

    Args:
        responses: Responses as a list aligned with ``prompts``, a mapping from prompt text or
            key to response, or rows ``{"prompt" | "key", "response"}`` (IFEval's response
            file format).
        prompts: IFEval's ``input_data.jsonl`` path, or loaded prompts (a subset is fine).
        registry: Checkers to use (default: the 25 IFEval types).

    Returns:
        The accuracies and per-prompt details.

    Raises:
        ConiferInputError: A prompt has no response, or the prompt file is malformed.
        UnknownInstructionError: A prompt uses an instruction the registry does not know.
    """
    items = load_ifeval(prompts) if isinstance(prompts, (str, os.PathLike)) else list(prompts)
    if not items:
        raise ConiferInputError("no IFEval prompts to score")
    reg = registry or default_registry()
    texts = _response_lookup(responses, items)
    details: list[dict[str, Any]] = []
    n_inst = strict_inst = loose_inst = strict_prompt = loose_prompt = 0
    for item, text in zip(items, texts):
        strict = [
            reg.check(i, text, kw, mode="strict", prompt=item.prompt)
            for i, kw in zip(item.instruction_id_list, item.kwargs)
        ]
        loose = [
            reg.check(i, text, kw, mode="loose", prompt=item.prompt)
            for i, kw in zip(item.instruction_id_list, item.kwargs)
        ]
        n_inst += len(strict)
        strict_inst += sum(strict)
        loose_inst += sum(loose)
        strict_prompt += all(strict)
        loose_prompt += all(loose)
        details.append(
            {
                "key": item.key,
                "prompt": item.prompt,
                "instruction_id_list": list(item.instruction_id_list),
                "strict": strict,
                "loose": loose,
            }
        )
    n = len(items)
    return IFEvalResult(
        prompt_strict=strict_prompt / n,
        prompt_loose=loose_prompt / n,
        instruction_strict=strict_inst / n_inst if n_inst else 0.0,
        instruction_loose=loose_inst / n_inst if n_inst else 0.0,
        num_prompts=n,
        num_instructions=n_inst,
        details=details,
    )


def per_type_table(result: IFEvalResult) -> dict[str, dict[str, float]]:
    """Accuracy per instruction type: ``{id: {"count", "strict", "loose"}}``, sorted by id."""
    acc: dict[str, list[int]] = {}
    for row in result.details:
        for iid, s, lo in zip(row["instruction_id_list"], row["strict"], row["loose"]):
            c = acc.setdefault(iid, [0, 0, 0])
            c[0] += 1
            c[1] += int(s)
            c[2] += int(lo)
    return {k: {"count": v[0], "strict": v[1] / v[0], "loose": v[2] / v[0]} for k, v in sorted(acc.items())}


def generate_ifeval(
    model: Any,
    prompts: str | os.PathLike[str] | Sequence[IFEvalPrompt],
    out_dir: str | os.PathLike[str],
    *,
    max_new_tokens: int = 1280,
    temperature: float = 0.0,
    max_in_flight: int = 1,
    batch_size: int = 8,
    system: str | None = None,
    registry: CheckerRegistry | None = None,
    show_progress: bool | None = None,
) -> tuple[list[dict[str, Any]], IFEvalResult, bool]:
    """Answer IFEval's prompts with any chat model, then score the answers.

    Runs as a one-stage :class:`~zjulab.conifer.pipeline.Pipeline` in ``out_dir``, so answers
    are cached per request, an interrupted or failed run resumes asking only what is missing,
    and ``max_in_flight`` bounds the requests a server sees. ``out_dir/responses.jsonl`` gets
    IFEval's response format (``{"prompt", "response"}``) and ``out_dir/scores.json`` the scores.

    Args:
        model: Any :class:`~zjulab.common.protocols.ChatModel`.
        prompts: IFEval's ``input_data.jsonl`` or loaded prompts.
        out_dir: Directory for the cache, responses and scores.
        max_new_tokens: Answer length (IFEval's reference generations allow 1,280 tokens).
        temperature: Sampling temperature (0: greedy).
        max_in_flight: Requests in flight at once.
        batch_size: Conversations per call of an in-process model.
        system: Optional system message.
        registry: Checkers (default: the 25 IFEval types).
        show_progress: Progress bar (``None``: on a terminal).

    Returns:
        ``(responses, result, complete)``; with ``complete`` false some prompts got no answer
        (they are scored as empty and asked again by the next run).
    """
    from zjulab.common.io import write_json, write_jsonl
    from zjulab.conifer.config import PipelineConfig
    from zjulab.conifer.pipeline import Pipeline
    from zjulab.conifer.stages import IFEvalAnswerStage

    items = load_ifeval(prompts) if isinstance(prompts, (str, os.PathLike)) else list(prompts)
    if not items:
        raise ConiferInputError("no IFEval prompts to answer")
    cfg = PipelineConfig(
        out_dir=str(out_dir),
        answer_max_new_tokens=max_new_tokens,
        temperature=temperature,
        max_in_flight=max_in_flight,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    records = [{"id": f"k{p.key}", "key": p.key, "prompt": p.prompt} for p in items]
    result = Pipeline(model, None, cfg, stages=[IFEvalAnswerStage(system)]).run(records)
    answered = {r["key"]: r["response"] for r in result.records if "response" in r}
    rows = [{"key": p.key, "prompt": p.prompt, "response": answered.get(p.key, "")} for p in items]
    scores = evaluate_ifeval([r["response"] for r in rows], items, registry=registry)
    out = Path(out_dir)
    # a prompt without an answer is scored as failed here and marked in the file, so the file
    # of an unfinished run is never scored later as if it were finished
    write_jsonl(
        out / "responses.jsonl",
        (
            {"prompt": r["prompt"], "response": r["response"]}
            if r["key"] in answered
            else {"prompt": r["prompt"], "response": "", "answered": False}
            for r in rows
        ),
    )
    unanswered = sum(p.key not in answered for p in items)
    write_json(
        out / "scores.json",
        {
            **scores.as_dict(),
            "complete": result.complete,
            "unanswered": unanswered,
            "model": _model_name(model),
        },
    )
    return rows, scores, result.complete


def _model_name(model: Any) -> str:
    return str(getattr(model, "model_id", type(model).__name__))
