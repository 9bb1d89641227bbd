"""Ask a chat model without losing an answer: every answer is kept, a retry asks only the rest.

:func:`ask` sends the conversations an :class:`AnswerStore` has no answer for, records each
answer as it arrives (text and how it ended), and raises :class:`~zjulab.serl.errors.SERLRemoteError`
only after keeping the answers that did arrive, so calling it again sends only the requests that
failed. A store held in memory lasts as long as the object (a :class:`~zjulab.serl.judge.CopelandJudge`
keeps one); a store with a ``path`` is a JSON-lines file that also survives an interrupted
process (each batch of answers is appended and flushed as soon as it arrives; a line torn by a
kill is ignored when the file is read back).

An answer is keyed by the model's ``model_id``, the exact conversation, the sampling settings
and the occurrence of that conversation within the call (the K/2 identical judge prompts of a
pair are separate samples), so a changed prompt, template, model name or setting is asked
anew, never answered from the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zjulab.serl.errors import SERLRemoteError, SERLStoreError

__all__ = ["Answer", "AnswerStore", "ask"]

logger = logging.getLogger(__name__)

_FORMAT = "zjulab-serl/answers"


@dataclass(frozen=True)
class Answer:
    """One answer of a chat model.

    Attributes:
        text: The answer.
        finish_reason: How it ended (``"stop"``, ``"length"``, ...; ``None`` when the model does
            not say).
    """

    text: str
    finish_reason: str | None = "stop"

    @property
    def finished(self) -> bool:
        """The answer was not cut off at the token limit."""
        return self.finish_reason != "length"


class AnswerStore:
    """Answers kept by key, in memory and optionally in a JSON-lines file.

    Args:
        path: File to keep the answers in (created on the first answer; an existing file must be
            one this class wrote). ``None`` keeps them in memory only.

    Raises:
        SERLStoreError: ``path`` is a folder, or a file of another kind.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._answers: dict[str, Answer] = {}
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        if path.is_dir():
            raise SERLStoreError(f"{path}: is a folder, not an answers file")
        if not path.exists():
            return
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SERLStoreError(f"{path}: cannot be read as an answers file ({exc})") from exc
        try:
            head = json.loads(lines[0]) if lines else None
        except ValueError:
            head = None
        if not (isinstance(head, dict) and head.get("format") == _FORMAT):
            raise SERLStoreError(f"{path}: exists and is not a zjulab-serl answers file; choose another path")
        for number, line in enumerate(lines[1:], start=2):
            try:
                row = json.loads(line)
                self._answers[str(row["key"])] = Answer(str(row["text"]), row.get("finish_reason"))
            except (ValueError, KeyError, TypeError):
                # a line cut short by a kill is the only kind this class leaves; skip it
                logger.warning("%s:%d: unreadable line skipped", path, number)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> Answer | None:
        """The answer kept under ``key``, if any."""
        return self._answers.get(key)

    def put_many(self, items: Sequence[tuple[str, Answer]]) -> None:
        """Keep answers (appended to the file, flushed to disk, when there is one)."""
        if not items:
            return
        for key, answer in items:
            self._answers[key] = answer
        if self.path is None:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if new:
                fh.write(json.dumps({"format": _FORMAT, "version": 1}) + "\n")
            for key, answer in items:
                row = {"key": key, "text": answer.text, "finish_reason": answer.finish_reason}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    @staticmethod
    def key(model_id: str, conversation: Any, sampling: dict[str, Any], occurrence: int) -> str:
        """The key of one request (see the module docstring)."""
        doc = json.dumps(
            [str(model_id), conversation, sorted(sampling.items()), occurrence],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def _results(
    chat_model: Any, conversations: list[Any], sampling: dict[str, Any]
) -> list[tuple[Answer | None, Any]]:
    """``(answer or None, error)`` per conversation, from ``generate_results`` when the model has it."""
    results_of = getattr(chat_model, "generate_results", None)
    if callable(results_of):
        results = results_of(conversations, **sampling)
    else:
        try:
            return [(Answer(str(t), None), None) for t in chat_model.generate(conversations, **sampling)]
        except Exception as exc:
            partial = getattr(exc, "results", None)
            if partial is None or len(partial) != len(conversations):
                raise
            results = partial
    out: list[tuple[Answer | None, Any]] = []
    for r in results:
        if getattr(r, "error", None) is None and getattr(r, "text", None) is not None:
            out.append((Answer(str(r.text), getattr(r, "finish_reason", None)), None))
        else:
            out.append((None, getattr(r, "error", None)))
    return out


def ask(
    chat_model: Any,
    conversations: Sequence[Any],
    store: AnswerStore | None = None,
    *,
    batch_size: int = 64,
    **sampling: Any,
) -> list[Answer]:
    """Answer each conversation, asking only those ``store`` has no answer for.

    Args:
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel`.
        conversations: The conversations, in order.
        store: Where answers are looked up and kept (``None``: a fresh in-memory store).
        batch_size: Conversations per request batch (each batch is kept as soon as it is answered).
        **sampling: Sampling keywords passed to the model.

    Returns:
        One :class:`Answer` per conversation.

    Raises:
        SERLRemoteError: Some conversations got no answer; the answers received are in ``store``
            and a new call asks only the others.
    """
    store = store if store is not None else AnswerStore()
    model_id = str(getattr(chat_model, "model_id", type(chat_model).__name__))
    seen: dict[str, int] = {}
    keys = []
    for conv in conversations:
        plain = json.dumps(conv, sort_keys=True, ensure_ascii=False, default=str)
        seen[plain] = seen.get(plain, -1) + 1
        keys.append(AnswerStore.key(model_id, conv, sampling, seen[plain]))
    missing = [i for i, k in enumerate(keys) if store.get(k) is None]
    if len(missing) < len(keys):
        logger.info("%d of %d answers taken from the answer store", len(keys) - len(missing), len(keys))
    failed: list[int] = []
    first_error: Any = None
    for start in range(0, len(missing), max(1, batch_size)):
        chunk = missing[start : start + max(1, batch_size)]
        got = _results(chat_model, [conversations[i] for i in chunk], sampling)
        store.put_many([(keys[i], a) for i, (a, _) in zip(chunk, got) if a is not None])
        for i, (a, err) in zip(chunk, got):
            if a is None:
                failed.append(i)
                first_error = first_error if first_error is not None else err
    if failed:
        from zjulab.common.errors import ConfigError

        if isinstance(first_error, ConfigError):  # a wrong key, model name or URL: say so as it is
            raise first_error
        where = f"in {store.path}" if store.path is not None else "in memory"
        raise SERLRemoteError(
            f"{len(failed)} of {len(keys)} request(s) got no answer from {model_id} (first: {first_error}); "
            f"the {len(keys) - len(failed)} answer(s) received are kept {where} and asking again sends "
            f"only the {len(failed)} others"
        )
    return [store.get(k) for k in keys]  # type: ignore[misc]
