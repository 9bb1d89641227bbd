"""Training conversations from curated records: easy-to-hard, internal and external feedback.

* **Easy-to-hard** (the paper's progressive scheme): records are grouped by the question they
  were derived from (``query``), groups keep the order in which they first appear, and within a
  group the instructions are sorted by difficulty level and chained into one multi-turn
  conversation, easiest first. A model trained on it sees each hard instruction after the
  easier versions of the same question.
* **Internal feedback**: for hard instructions, the assistant turn first states how it meets
  each requirement, then answers.
* **External feedback**: the weak model's answer, the strong model's critique as the next user
  turn ("... Please give a revised version."), and the strong answer as the revision.

Records may use this package's field names (``instruction``, ``level``) or the authors'
(``question``, ``diff`` = ``"Difficulty 3"``), so their published stage files convert too.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from zjulab.common.protocols import Conversation
from zjulab.conifer.errors import ConiferInputError

__all__ = [
    "Ordering",
    "build_conversations",
    "easy_to_hard",
    "external_feedback",
    "internal_feedback",
    "normalize_record",
    "single_turn",
    "to_dataset",
]

logger = logging.getLogger(__name__)

Ordering = Literal["easy_to_hard", "level", "shuffled"]
_LEVEL = re.compile(r"(\d+)")


def normalize_record(record: Mapping[str, Any], *, index: int | None = None) -> dict[str, Any]:
    """Fields ``query``, ``level`` (int), ``instruction`` and ``answer`` of one record.

    Args:
        record: A curated record (this package's field names or the authors').
        index: Its position in the input, named in errors.

    Raises:
        ConiferInputError: Not a mapping; no question or no answer; a level that is not a
            positive integer or a ``"Difficulty N"`` string; a text field (instruction,
            answer, query, weak answer, feedback) that is not a string; ``follows`` that is
            not a boolean.
    """
    where = f"record {index}" if index is not None else "record"
    if not isinstance(record, Mapping):
        raise ConiferInputError(
            f"{where} is a {type(record).__name__}, not a curated record (a mapping with "
            "'instruction' and 'answer'); a conversation (a list of messages) is not a record"
        )
    if record.get("id") is not None:
        where = f"{where} {record['id']!s}" if index is not None else f"record {record['id']!s}"
    instruction = record.get("instruction", record.get("question"))
    answer = record.get("answer")
    level_raw = record.get("level", record.get("diff"))
    if not instruction or answer is None:
        raise ConiferInputError(f"{where} needs an instruction and an answer")
    for key in ("instruction", "question", "answer", "query", "seed", "weak_answer", "feedback"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise ConiferInputError(
                f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r:.80}"
            )
    if "follows" in record and record["follows"] is not None and not isinstance(record["follows"], bool):
        raise ConiferInputError(f"{where}: 'follows' must be true or false, got {record['follows']!r}")
    if isinstance(level_raw, bool) or not isinstance(level_raw, (int, str)):
        raise ConiferInputError(f"{where}: unreadable level {level_raw!r}")
    if isinstance(level_raw, int):
        level = level_raw
    else:
        m = _LEVEL.search(level_raw)
        if not m:
            raise ConiferInputError(f"{where}: unreadable level {level_raw!r}")
        level = int(m.group(1))
    if level < 1:
        raise ConiferInputError(f"{where}: level {level_raw!r} is not a positive integer")
    out = dict(record)
    out.update(
        query=str(record.get("query") or record.get("seed") or instruction),
        level=level,
        instruction=str(instruction),
        answer=str(answer),
    )
    return out


def _grouped(records: Iterable[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for i, r in enumerate(records):
        n = normalize_record(r, index=i)
        groups.setdefault(n["query"], []).append(n)
    return [sorted(g, key=lambda r: r["level"]) for g in groups.values()]  # sorted() is stable


def easy_to_hard(records: Iterable[Mapping[str, Any]], *, max_turns: int | None = None) -> list[Conversation]:
    """One multi-turn conversation per question, its instructions from easiest to hardest.

    Args:
        records: Answered records (see :func:`normalize_record`).
        max_turns: Keep at most this many (easiest) exchanges per conversation.

    Returns:
        Conversations (lists of ``{"role", "content"}``) in order of first appearance.
    """
    out: list[Conversation] = []
    for group in _grouped(records):
        conv: Conversation = []
        for r in group[:max_turns]:
            conv.append({"role": "user", "content": r["instruction"]})
            conv.append({"role": "assistant", "content": r["answer"]})
        out.append(conv)
    return out


def single_turn(records: Iterable[Mapping[str, Any]]) -> list[tuple[int, Conversation]]:
    """``(level, [user, assistant])`` for every answered record, in input order."""
    out: list[tuple[int, Conversation]] = []
    for i, r in enumerate(records):
        n = normalize_record(r, index=i)
        out.append(
            (
                n["level"],
                [
                    {"role": "user", "content": n["instruction"]},
                    {"role": "assistant", "content": n["answer"]},
                ],
            )
        )
    return out


def internal_feedback(records: Iterable[Mapping[str, Any]]) -> list[Conversation]:
    """Conversations that carry internal process feedback.

    A record answered with the feedback inside the answer (``process_in_answer``, the paper's
    way, ``mode="conifer"``) gives ``[instruction, answer]`` as it is; a record with separate
    ``process`` steps (``mode="verifiable"``) gives an answer that starts with the steps.
    """
    out: list[Conversation] = []
    for i, r in enumerate(records):
        n = normalize_record(r, index=i)
        if r.get("process_in_answer"):
            out.append(
                [
                    {"role": "user", "content": n["instruction"]},
                    {"role": "assistant", "content": n["answer"]},
                ]
            )
            continue
        steps = r.get("process")
        if not steps:
            continue
        plan = "How this answer meets the requirements:\n" + "\n".join(f"- {s}" for s in steps)
        out.append(
            [
                {"role": "user", "content": n["instruction"]},
                {"role": "assistant", "content": f"{plan}\n\n{n['answer']}"},
            ]
        )
    return out


def external_feedback(records: Iterable[Mapping[str, Any]]) -> list[Conversation]:
    """Four-turn conversations: weak answer, critique, revised (strong) answer.

    Only records where the strong model judged the weak answer as failing (``follows`` false
    with ``feedback``) are used.
    """
    out: list[Conversation] = []
    for i, r in enumerate(records):
        n = normalize_record(r, index=i)
        if r.get("follows", True) is not False or not r.get("feedback") or not r.get("weak_answer"):
            continue
        out.append(
            [
                {"role": "user", "content": n["instruction"]},
                {"role": "assistant", "content": str(r["weak_answer"])},
                {"role": "user", "content": f"{r['feedback']} Please give a revised version."},
                {"role": "assistant", "content": n["answer"]},
            ]
        )
    return out


def build_conversations(
    records: Sequence[Mapping[str, Any]],
    ordering: Ordering = "easy_to_hard",
    *,
    include_feedback: bool = True,
    seed: int = 0,
) -> list[Conversation]:
    """Training conversations in a curriculum order.

    Args:
        records: Answered records (the answer stage's output or later).
        ordering: ``"easy_to_hard"``: one multi-turn conversation per question, its general
            instructions by level (the paper's progressive scheme), then each format/number
            variant without process feedback as a single-turn example; ``"level"``: single-turn examples sorted by level, easiest
            first (a curriculum over the whole set); ``"shuffled"``: single-turn examples in
            random order (the baseline without curriculum).
        include_feedback: Append the internal- and external-feedback conversations. Without
            it, records whose answers end with their process feedback (``process_in_answer``,
            the format/number variants of ``mode="conifer"``) are left out: those answers are
            internal-feedback data.
        seed: Shuffling seed.

    Raises:
        ConiferConfigError: Unknown ordering.
    """
    from zjulab.conifer.errors import ConiferConfigError

    answered = [r for r in records if r.get("answer") is not None]
    # answers that end with their process feedback train as internal-feedback conversations only
    plain = [r for r in answered if not r.get("process_in_answer")]
    # the ladder is the question's levelled general instructions (the authors chain only
    # those); a format/number variant is not a level of its own and trains single-turn
    ladder = [r for r in plain if r.get("kind", "general") == "general"]
    variants = [c for _, c in single_turn(r for r in plain if r.get("kind", "general") != "general")]
    if ordering == "easy_to_hard":
        convs = easy_to_hard(ladder) + variants
    elif ordering == "level":
        convs = [c for _, c in sorted(single_turn(plain), key=lambda x: x[0])]
    elif ordering == "shuffled":
        convs = [c for _, c in single_turn(plain)]
        random.Random(seed).shuffle(convs)
    else:
        raise ConiferConfigError(f"ordering must be 'easy_to_hard', 'level' or 'shuffled', got {ordering!r}")
    if include_feedback:
        convs += internal_feedback(answered) + external_feedback(answered)
    return convs


def to_dataset(conversations: Sequence[Conversation]) -> Any:
    """A Hugging Face ``datasets.Dataset`` with one ``messages`` column (TRL's chat format).

    Row order is kept, so a curriculum survives as long as the trainer does not shuffle
    (see :func:`~zjulab.conifer.training.sft_trainer`).

    Raises:
        MissingDependencyError: ``datasets`` is not installed (``pip install 'zjulab-conifer[train]'``).
    """
    from zjulab.common.deps import require

    datasets = require("datasets", "pip install 'zjulab-conifer[train]'", feature="to_dataset")
    return datasets.Dataset.from_list([{"messages": [dict(m) for m in c]} for c in conversations])
