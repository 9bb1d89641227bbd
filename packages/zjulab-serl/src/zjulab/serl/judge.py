"""Rank a group of responses with any :class:`~zjulab.common.protocols.ChatModel` as the judge.

This is SERL's reward computation without training: build every pair in both orders, ask the
judge, parse the verdicts, and score the responses with the Copeland rule. The trainer uses the
same functions on its own rollouts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zjulab.common.protocols import ChatModel
from zjulab.serl.answers import AnswerStore, ask
from zjulab.serl.config import JudgeConfig
from zjulab.serl.errors import SERLInputError
from zjulab.serl.pairs import JudgmentSlot, judge_prompts, word_count
from zjulab.serl.rewards import (
    JudgeDiagnostics,
    actor_rewards,
    judge_diagnostics,
    judge_rewards,
    verdict_matrix,
)

__all__ = ["CopelandJudge", "GroupJudgment", "format_matrix", "score_group"]

logger = logging.getLogger(__name__)


@dataclass
class GroupJudgment:
    """Everything SERL derives from one group's judgments.

    Attributes:
        instruction: The request.
        responses: The N responses as given.
        slots: The ``C(N, 2) * K`` judgment slots.
        raw: The judge's raw outputs, one per slot.
        verdicts: Parsed verdicts (1, 2 or None), one per slot.
        matrix: ``matrix[i, j]`` = judgments preferring i over j.
        actor_rewards: R_A of each response.
        judge_rewards: R_J of each judgment.
        diagnostics: Consistency, position bias, invalid rate, reward spread.
        finished: Per judgment, whether the judge's output ended on its own (one cut off at the
            token limit has no verdict).
    """

    instruction: str
    responses: list[str]
    slots: list[JudgmentSlot]
    raw: list[str]
    verdicts: list[int | None]
    matrix: np.ndarray
    actor_rewards: np.ndarray
    judge_rewards: np.ndarray
    diagnostics: JudgeDiagnostics
    finished: list[bool] = field(default_factory=list)

    def ranking(self) -> list[int]:
        """Response indices from best to worst Actor reward (ties keep the given order)."""
        return sorted(range(len(self.responses)), key=lambda i: (-self.actor_rewards[i], i))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "instruction": self.instruction,
            "responses": self.responses,
            "verdict_matrix": self.matrix.tolist(),
            "actor_rewards": [float(x) for x in self.actor_rewards],
            "ranking": self.ranking(),
            "judgments": [
                {
                    "first": s.first,
                    "second": s.second,
                    "verdict": v,
                    "judge_reward": float(r),
                    "raw": t,
                    "finished": f,
                }
                for s, v, r, t, f in zip(
                    self.slots,
                    self.verdicts,
                    self.judge_rewards,
                    self.raw,
                    self.finished or [True] * len(self.raw),
                )
            ],
            "diagnostics": self.diagnostics.as_dict(),
        }


def format_matrix(matrix: np.ndarray, rewards: Sequence[float] | None = None) -> str:
    """A text table of a verdict matrix (row beat column that many times), with rewards if given."""
    n = matrix.shape[0]
    width = max(3, len(str(int(matrix.max()) if matrix.size else 0)) + 1)
    head = "    " + "".join(f"{j:>{width}}" for j in range(n)) + ("   R_A" if rewards is not None else "")
    lines = [head]
    for i in range(n):
        cells = "".join(f"{'-' if i == j else int(matrix[i, j]):>{width}}" for j in range(n))
        tail = f"  {rewards[i]:.3f}" if rewards is not None else ""
        lines.append(f"{i:>3} {cells}{tail}")
    return "\n".join(lines)


def score_group(
    instruction: str,
    responses: Sequence[str],
    raw_verdicts: Sequence[str],
    config: JudgeConfig | None = None,
    slots: Sequence[JudgmentSlot] | None = None,
    parser: Callable[[str], int | None] | None = None,
    finished: Sequence[bool] | None = None,
) -> GroupJudgment:
    """Score a group from the judge's raw outputs (one per slot of :func:`~zjulab.serl.pairs.build_pairs`).

    Args:
        instruction: The request.
        responses: The N responses.
        raw_verdicts: The judge's outputs, one per slot.
        config: Judge settings.
        slots: The slots (default: :func:`~zjulab.serl.pairs.build_pairs` for N and K).
        parser: Maps a raw output to 1, 2 or None (default: :func:`~zjulab.serl.verdict.parse_verdict`
            with the config's format and reasoning marker).
        finished: Per output, whether it ended on its own; one cut off at the token limit
            (``False``) has no verdict, whatever boxes it holds. ``None``: all finished.

    Raises:
        SERLInputError: The number of outputs does not match the slots.
    """
    cfg = config or JudgeConfig()
    if slots is None:
        _, slots = judge_prompts(instruction, responses, cfg)
    slots = list(slots)
    if len(raw_verdicts) != len(slots):
        raise SERLInputError(f"{len(raw_verdicts)} judge outputs for {len(slots)} judgment slots")
    if finished is not None and len(finished) != len(slots):
        raise SERLInputError(f"{len(finished)} 'finished' flags for {len(slots)} judgment slots")
    read = parser or cfg.parse
    done = [True] * len(slots) if finished is None or cfg.read_truncated else [bool(f) for f in finished]
    verdicts = [read(t) if ok else None for t, ok in zip(raw_verdicts, done)]
    shown = [cfg.answer_of(r) for r in responses]
    lengths = [word_count(r) for r in shown]
    ra = actor_rewards(
        lengths,
        slots,
        verdicts,
        mode=cfg.actor_reward,
        band=cfg.length_band,
        band_reference=cfg.length_band_reference,
    )
    rj = judge_rewards(slots, verdicts, ra)
    return GroupJudgment(
        instruction=instruction,
        responses=list(responses),
        slots=slots,
        raw=list(raw_verdicts),
        verdicts=verdicts,
        matrix=verdict_matrix(len(responses), slots, verdicts),
        actor_rewards=ra,
        judge_rewards=rj,
        diagnostics=judge_diagnostics(slots, verdicts, ra),
        finished=done,
    )


class CopelandJudge:
    r"""Judge groups of responses pairwise with a chat model and score them (SERL's rewards).

    Args:
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel` (local, served, scripted).
        config: Judge settings (K, prompt template, verdict format, reward rule).
        answers: Where the judge's answers are kept (default: in memory, for the life of this
            object); an :class:`~zjulab.serl.answers.AnswerStore` with a path survives a crash.

    Example:
        >>> from zjulab.common.testing import ScriptedChatModel
        >>> judge = CopelandJudge(ScriptedChatModel(default="\\boxed{1}"))
        >>> result = judge.judge("Say hi", ["hi", "hello"])  # a judge that always says "1"
        >>> result.actor_rewards.tolist()  # each wins once, in first position: no preference
        [0.5, 0.5]
        >>> result.diagnostics.consistency_rate
        0.0
    """

    def __init__(
        self, chat_model: ChatModel, config: JudgeConfig | None = None, answers: AnswerStore | None = None
    ) -> None:
        self.chat_model = chat_model
        self.config = config or JudgeConfig()
        self.answers = answers if answers is not None else AnswerStore()

    def judge(self, instruction: str, responses: Sequence[str], **sampling: Any) -> GroupJudgment:
        """Judge one group (see :meth:`judge_many`)."""
        return self.judge_many([(instruction, responses)], **sampling)[0]

    def judge_many(self, groups: Sequence[tuple[str, Sequence[str]]], **sampling: Any) -> list[GroupJudgment]:
        """Judge several groups with one batched ``generate`` call.

        Args:
            groups: ``(instruction, responses)`` pairs.
            **sampling: Overrides of the judge's ``max_new_tokens`` / ``temperature`` / ...

        Every answer is kept in :attr:`answers`: when some requests fail
        (:class:`~zjulab.serl.errors.SERLRemoteError`), calling again sends only those. A judge
        output cut off at the token limit has no verdict (it counts as invalid).

        Raises:
            SERLInputError: A group with fewer than two responses.
            SERLRemoteError: Some judge requests got no answer.
        """
        cfg = self.config
        prompts: list[str] = []
        per_group: list[tuple[str, Sequence[str], list[JudgmentSlot], int]] = []
        for instruction, responses in groups:
            p, slots = judge_prompts(instruction, responses, cfg)
            per_group.append((instruction, responses, slots, len(prompts)))
            prompts.extend(p)
        opts: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}
        opts.update(sampling)
        logger.info("judging %d groups with %d judge prompts", len(per_group), len(prompts))
        got = ask(self.chat_model, [[{"role": "user", "content": p}] for p in prompts], self.answers, **opts)
        raw = [a.text for a in got]
        finished = [a.finished for a in got]
        return [
            score_group(
                instr,
                resp,
                raw[start : start + len(slots)],
                cfg,
                slots,
                finished=finished[start : start + len(slots)],
            )
            for instr, resp, slots, start in per_group
        ]
