"""Rubric scores and response rewards: verifiable checkers plus a cached YES/NO LLM judge."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch

from zjulab.common.protocols import ChatModel, Conversation
from zjulab.rtt.errors import RTTConfigError, RubricError
from zjulab.rtt.rubrics import Rubric, parse_rubrics

__all__ = ["RubricReward", "ScoreBatch", "completion_pieces", "completion_text", "prompt_text"]

logger = logging.getLogger(__name__)

_JUDGE_SYSTEM = (
    "You grade whether a response meets one criterion. Read the request, the criterion and the "
    "response, then answer with a single word: YES if the response meets the criterion, NO otherwise."
)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_LEADING_YES_NO = re.compile(
    r"^[\s*_`\"'(\[]*(?:final\s+answer|answer|verdict)?\s*[:=]?[\s*_`\"'(\[]*(yes|no)\b", re.IGNORECASE
)
_BOXED_YES_NO = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*(yes|no)\s*\}?\s*\}", re.IGNORECASE)


def prompt_text(prompt: Any) -> str:
    """The text of a TRL prompt: a string, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1])
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


def completion_pieces(completion: Any) -> list[str]:
    """The texts a TRL completion's response is made of, in order.

    A string is one piece. A conversational completion gives the content of each assistant
    message (TRL's tool loop interleaves them with ``tool`` messages, whose content the tool
    wrote, not the policy, so a rubric is not scored on it; parsed reasoning, kept apart as
    ``reasoning_content``, is not part of the response either).
    """
    if isinstance(completion, str):
        return [completion]
    if isinstance(completion, (list, tuple)):
        return [
            str(m.get("content") or "")
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        ]
    return [str(completion)]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the content of its assistant message(s)."""
    return "".join(completion_pieces(completion))


class _Answer:
    """A plain-text judge answer (from a ``generate`` that says nothing of how it ended)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.finish_reason: str | None = None


class ScoreBatch:
    """Rubric scores of a batch of responses, padded to the largest rubric count.

    Attributes:
        scores: ``[B, K]`` scores in [-1, 1] (0 on padding).
        mask: ``[B, K]``, 1 on real rubrics.
        rubrics: The rubrics of each response.
        responses: The response texts scored.
        pieces: The pieces each response text joins (one per assistant message of a
            conversational completion; see :func:`completion_pieces`).
    """

    def __init__(
        self,
        scores: torch.Tensor,
        mask: torch.Tensor,
        rubrics: list[list[Rubric]],
        responses: list[str],
        pieces: list[list[str]] | None = None,
    ):
        self.scores = scores
        self.mask = mask
        self.rubrics = rubrics
        self.responses = responses
        self.pieces = pieces if pieces is not None else [[r] for r in responses]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class RubricReward:
    """Scores responses against their prompt's rubrics and turns the scores into a reward.

    ``s[i, k]`` is ``+1`` when response ``i`` meets rubric ``k`` and ``-1`` when not (as in the
    authors' code; a judge answer without a verdict counts as not met). The response reward is
    ``"all"``: 1 when every rubric is met, else 0 (all-or-nothing), or ``"rate"``: the fraction
    of rubrics met.

    Instances are TRL reward functions: ``reward(prompts=..., completions=..., rubrics=...)``
    returns one float per completion (the dataset column holding the rubrics is passed by TRL
    as a keyword; its name is ``rubrics_column``). The scores of the last call are kept in
    :attr:`last` for :class:`~zjulab.rtt.trainer.RTTGRPOTrainer`.

    Args:
        judge: Chat model answering YES/NO for ``"judge"`` rubrics; ``None`` makes judge
            rubrics an error.
        aggregate: ``"all"`` (all-or-nothing) or ``"rate"`` (satisfaction rate).
        rubrics_column: Keyword (dataset column) that carries each prompt's rubrics.
        judge_batch_size: Conversations sent to the judge per ``generate`` call.
        cache_size: Judge verdicts remembered (keyed by prompt, response and criterion).
        judge_max_new_tokens: Length limit of a judge answer; the default leaves a reasoning
            judge room to close its ``<think>`` block (a non-reasoning judge stops after one word).
        reasoning_start: Marker opening a judge's reasoning block.
        reasoning_end: Marker closing it; only what follows the last one is read as the verdict.
    """

    __name__ = "rubric_reward"

    def __init__(
        self,
        judge: ChatModel | None = None,
        *,
        aggregate: Literal["all", "rate"] = "all",
        rubrics_column: str = "rubrics",
        judge_batch_size: int = 16,
        cache_size: int = 100_000,
        judge_max_new_tokens: int = 512,
        reasoning_start: str = "<think>",
        reasoning_end: str = "</think>",
    ) -> None:
        if aggregate not in ("all", "rate"):
            raise RTTConfigError(f"aggregate must be 'all' or 'rate', got {aggregate!r}")
        if judge_batch_size <= 0:
            raise RTTConfigError(f"judge_batch_size must be positive, got {judge_batch_size}")
        if cache_size < 0:
            raise RTTConfigError(f"cache_size must be >= 0, got {cache_size}")
        self.judge = judge
        self.aggregate = aggregate
        self.rubrics_column = rubrics_column
        self.judge_batch_size = judge_batch_size
        self.cache_size = cache_size
        self.judge_max_new_tokens = judge_max_new_tokens
        self.reasoning_start = reasoning_start
        self.reasoning_end = reasoning_end
        self.judge_calls = 0
        self.judge_unreadable = 0
        self.cache_hits = 0
        self.last: ScoreBatch | None = None
        self._cache: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    # ----- judge -------------------------------------------------------------------------------
    def _key(self, conversation: Conversation) -> str:
        """Cache key: the judge, its length limit and the exact conversation it is asked."""
        judge_id = getattr(self.judge, "model_id", None) or type(self.judge).__name__
        payload = json.dumps(
            [
                str(judge_id),
                self.judge_max_new_tokens,
                self.reasoning_start,
                self.reasoning_end,
                conversation,
            ],
            ensure_ascii=False,
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()

    def judge_conversation(self, prompt: str, response: str, criterion: str) -> Conversation:
        """The conversation the judge answers for one (prompt, response, criterion)."""
        return [
            {"role": "system", "content": _JUDGE_SYSTEM},
            {
                "role": "user",
                "content": f"Request:\n{prompt}\n\nCriterion: {criterion}\n\nResponse:\n{response}\n\n"
                "Does the response meet the criterion? Answer YES or NO.",
            },
        ]

    @staticmethod
    def read_verdict(
        answer: str, reasoning_start: str = "<think>", reasoning_end: str = "</think>"
    ) -> float | None:
        r"""``+1`` (YES), ``-1`` (NO) or ``None`` (no verdict) from a judge's answer.

        Reasoning is dropped first: only what follows the last ``reasoning_end`` counts, and an
        answer that stops inside its reasoning (an opening marker never closed) has no verdict.
        Then a ``\boxed{YES}``, else a YES/NO the answer starts with ("**Yes**, because",
        "Answer: NO"), else the last YES/NO word (a conclusion after an explanation).
        """
        if not isinstance(answer, str):
            return None
        end = answer.rfind(reasoning_end) if reasoning_end else -1
        if reasoning_start and answer.rfind(reasoning_start) > end:
            return None
        if end >= 0:
            answer = answer[end + len(reasoning_end) :]
        m = _BOXED_YES_NO.search(answer) or _LEADING_YES_NO.match(answer)
        if m is None:
            words = _YES_NO.findall(answer)
            if not words:
                return None
            word = words[-1]
        else:
            word = m.group(1)
        return 1.0 if word.lower() == "yes" else -1.0

    def parse_verdict(self, answer: str) -> float:
        """``+1`` for YES, ``-1`` for NO or no readable verdict (counted in ``judge_unreadable``)."""
        v = self.read_verdict(answer, self.reasoning_start, self.reasoning_end)
        if v is None:
            self.judge_unreadable += 1
            logger.warning("judge answer %r has no YES/NO verdict; scored as NO", answer[-80:])
            return -1.0
        return v

    def _ask(self, convs: list[Conversation]) -> tuple[list[Any], BaseException | None]:
        """One judge call.

        Returns:
            A ``ChatResult``-like answer per conversation (``None``: no answer), and the error that
            kept some unanswered (the answers received before it are kept).
        """
        assert self.judge is not None
        sampling = {"max_new_tokens": self.judge_max_new_tokens, "temperature": 0.0}
        results_of = getattr(self.judge, "generate_results", None)
        if callable(results_of):  # says how each answer ended and fails per conversation
            results = list(results_of(convs, **sampling))
            errors = [r.error for r in results if getattr(r, "error", None) is not None]
            return [None if getattr(r, "error", None) is not None else r for r in results], (
                errors[0] if errors else None
            )
        try:
            texts = self.judge.generate(convs, **sampling)
        except Exception as exc:  # a client that attaches what it received before failing
            got = getattr(exc, "results", None)
            if not isinstance(got, list) or len(got) != len(convs):
                raise
            return [None if getattr(r, "error", None) is not None else r for r in got], exc
        return [_Answer(t) for t in texts], None

    def _judge_many(self, triples: list[tuple[str, str, str]]) -> list[float]:
        out: list[float | None] = [None] * len(triples)
        todo: dict[str, list[int]] = {}
        convs_by_key: dict[str, Conversation] = {}
        with self._lock:
            for i, (p, r, c) in enumerate(triples):
                conv = self.judge_conversation(p, r, c)
                key = self._key(conv)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    out[i] = self._cache[key]
                    self.cache_hits += 1
                else:
                    todo.setdefault(key, []).append(i)
                    convs_by_key[key] = conv
        if todo:
            if self.judge is None:
                raise RubricError(
                    f"rubric {triples[next(iter(todo.values()))[0]][2]!r} needs an LLM judge; pass judge= to RubricReward"
                )
            keys = list(todo)
            for start in range(0, len(keys), self.judge_batch_size):
                chunk = keys[start : start + self.judge_batch_size]
                answers, error = self._ask([convs_by_key[k] for k in chunk])
                with self._lock:
                    for k, ans in zip(chunk, answers):
                        if ans is None:
                            continue
                        self.judge_calls += 1
                        text = str(getattr(ans, "text", "") or "")
                        # an answer cut off at the length limit is unfinished: no verdict from it,
                        # even when its reasoning block was opened by the chat template
                        cut = getattr(ans, "finish_reason", None) == "length"
                        v = None if cut else self.read_verdict(text, self.reasoning_start, self.reasoning_end)
                        if v is None:
                            self.judge_unreadable += 1
                            logger.warning(
                                "judge answer %r has no %sverdict; scored as NO",
                                text[-80:],
                                "finished " if cut else "YES/NO ",
                            )
                        for i in todo[k]:
                            out[i] = -1.0 if v is None else v
                        # an unreadable answer (cut off, no YES/NO) is not remembered: asked again next time
                        if self.cache_size and v is not None:
                            self._cache[k] = v
                            while len(self._cache) > self.cache_size:
                                self._cache.popitem(last=False)
                if error is not None:
                    missing = sum(1 for a in answers if a is None)
                    logger.warning(
                        "the judge left %d of %d question(s) unanswered; the %d verdict(s) received are "
                        "kept, so asking again sends only the unanswered ones",
                        missing,
                        len(answers),
                        len(answers) - missing,
                    )
                    raise error
        return [float(v) for v in out]  # type: ignore[arg-type]

    # ----- scoring -----------------------------------------------------------------------------
    def score(self, prompts: Sequence[Any], responses: Sequence[Any], rubrics: Sequence[Any]) -> ScoreBatch:
        """Score every response against its prompt's rubrics.

        Args:
            prompts: One prompt per response (text or conversation).
            responses: Response texts (or TRL conversational completions).
            rubrics: One rubric list per response (``Rubric`` objects, dicts or JSON strings).

        Returns:
            The padded ``[B, K]`` scores and mask.

        Raises:
            RubricError: Lengths differ, a rubric is malformed, or a judge rubric has no judge.
        """
        if not (len(prompts) == len(responses) == len(rubrics)):
            raise RubricError(
                f"got {len(prompts)} prompts, {len(responses)} responses and {len(rubrics)} rubric lists"
            )
        pieces = [completion_pieces(r) for r in responses]
        texts = ["".join(p) for p in pieces]
        ptexts = [prompt_text(p) for p in prompts]
        parsed = [parse_rubrics(r) for r in rubrics]
        b = len(texts)
        k = max((len(r) for r in parsed), default=0)
        scores = torch.zeros(b, max(k, 1))
        mask = torch.zeros(b, max(k, 1))
        judge_slots: list[tuple[int, int]] = []
        triples: list[tuple[str, str, str]] = []
        for i, (text, rs) in enumerate(zip(texts, parsed)):
            for j, rubric in enumerate(rs):
                mask[i, j] = 1.0
                if rubric.kind == "check":
                    res = rubric.evaluate(text)
                    scores[i, j] = 1.0 if res.passed else -1.0
                else:
                    judge_slots.append((i, j))
                    triples.append((ptexts[i], text, rubric.text))
        if triples:
            for (i, j), v in zip(judge_slots, self._judge_many(triples)):
                scores[i, j] = v
        if k == 0:
            scores, mask = scores[:, :0], mask[:, :0]
        return ScoreBatch(scores, mask, parsed, texts, pieces)

    def rewards(self, batch: ScoreBatch) -> list[float]:
        """Response rewards from a score batch (see the class docstring)."""
        out = []
        for i in range(len(batch)):
            m = batch.mask[i] > 0
            s = batch.scores[i][m]
            if s.numel() == 0:
                out.append(0.0)
            elif self.aggregate == "all":
                out.append(1.0 if bool((s > 0).all()) else 0.0)
            else:
                out.append(float(((s + 1.0) / 2.0).mean()))
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """TRL reward-function entry point.

        Raises:
            RubricError: The rubrics column is missing from ``kwargs``.
        """
        if self.rubrics_column not in kwargs:
            raise RubricError(
                f"the dataset has no {self.rubrics_column!r} column; RubricReward needs each prompt's rubrics"
            )
        batch = self.score(prompts, completions, kwargs[self.rubrics_column])
        self.last = batch
        return self.rewards(batch)
