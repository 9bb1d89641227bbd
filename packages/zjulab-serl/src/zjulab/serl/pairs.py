"""Turn a group of N responses into judge prompts: every unordered pair, both orders, K/2 each.

For N responses and K judgments per pair there are ``C(N, 2) * K`` judge prompts. For the pair
``(i, j)`` with ``i < j`` the first ``K/2`` slots show ``i`` as Answer 1 and the next ``K/2`` show
``j`` as Answer 1, so a judge that always answers "1" is exactly as often right as wrong.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from zjulab.serl.config import DEFAULT_JUDGE_TEMPLATE, JudgeConfig, check_judge_template
from zjulab.serl.errors import SERLInputError

__all__ = [
    "JudgmentSlot",
    "build_pairs",
    "judge_prompts",
    "num_judge_prompts",
    "render_judge_prompt",
    "strip_reasoning",
    "word_count",
]

logger = logging.getLogger(__name__)

_WORDS = re.compile(r"\S+")


@dataclass(frozen=True)
class JudgmentSlot:
    """One judge rollout's place in a group.

    Attributes:
        pair: Index of the unordered pair within the group (pairs in ``(0,1), (0,2), ...`` order).
        first: Index of the response shown as Answer 1.
        second: Index of the response shown as Answer 2.
    """

    pair: int
    first: int
    second: int

    def winner(self, verdict: int | None) -> int | None:
        """The index of the response a verdict (1, 2 or None) picks."""
        if verdict == 1:
            return self.first
        if verdict == 2:
            return self.second
        return None

    def loser(self, verdict: int | None) -> int | None:
        """The index of the response a verdict does not pick."""
        if verdict == 1:
            return self.second
        if verdict == 2:
            return self.first
        return None


def num_judge_prompts(num_responses: int, num_judgments: int) -> int:
    """``C(N, 2) * K``: judge rollouts needed for one group."""
    return num_responses * (num_responses - 1) // 2 * num_judgments


def build_pairs(num_responses: int, num_judgments: int) -> list[JudgmentSlot]:
    """All judgment slots of a group, pair by pair, the K slots of a pair consecutive.

    Args:
        num_responses: N, responses in the group (at least 2).
        num_judgments: K, judgments per unordered pair (even: K/2 in each order).

    Returns:
        ``C(N, 2) * K`` slots; slot ``p*K + r`` belongs to pair ``p``; its first ``K/2`` show the
        lower index first.

    Raises:
        SERLInputError: N < 2 or K not a positive even number.
    """
    if not isinstance(num_responses, int) or num_responses < 2:
        raise SERLInputError(f"a group needs at least 2 responses to compare, got {num_responses!r}")
    if not isinstance(num_judgments, int) or num_judgments < 2 or num_judgments % 2:
        raise SERLInputError(f"num_judgments must be an even integer >= 2, got {num_judgments!r}")
    half = num_judgments // 2
    slots: list[JudgmentSlot] = []
    pair = 0
    for i in range(num_responses):
        for j in range(i + 1, num_responses):
            slots.extend(JudgmentSlot(pair, i, j) for _ in range(half))
            slots.extend(JudgmentSlot(pair, j, i) for _ in range(half))
            pair += 1
    return slots


def strip_reasoning(text: str, marker: str = "</think>") -> str:
    """Keep what follows the last reasoning-end marker (the whole text when there is none)."""
    if marker and marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()


def word_count(text: str) -> int:
    """Length of a response in whitespace-separated words (the paper's length unit)."""
    return len(_WORDS.findall(text))


def render_judge_prompt(
    instruction: str, first: str, second: str, template: str = DEFAULT_JUDGE_TEMPLATE
) -> str:
    """Fill a judge template by plain substitution (braces elsewhere in it stay as they are).

    Raises:
        SERLConfigError: The template lacks a placeholder.
    """
    check_judge_template(template)
    # One pass over the template, so a response that happens to contain "{response_2}" is not
    # substituted again.
    values = {"{instruction}": instruction, "{response_1}": first, "{response_2}": second}
    return re.sub(r"\{instruction\}|\{response_1\}|\{response_2\}", lambda m: values[m.group(0)], template)


def judge_prompts(
    instruction: str, responses: Sequence[str], config: JudgeConfig | None = None
) -> tuple[list[str], list[JudgmentSlot]]:
    """The judge prompts of one group and their slots.

    Responses are cut after their reasoning first when ``config.strip_reasoning`` is set.

    Args:
        instruction: The request all responses answer.
        responses: The N responses.
        config: Judge settings (K, template, reasoning marker).

    Returns:
        ``(prompts, slots)``, both of length ``C(N, 2) * K``.

    Raises:
        SERLInputError: Fewer than two responses, or a response that is not a string.
    """
    cfg = config or JudgeConfig()
    for i, r in enumerate(responses):
        if not isinstance(r, str):
            raise SERLInputError(f"response {i} is {type(r).__name__}, not str")
    shown = [cfg.answer_of(r) for r in responses]
    slots = build_pairs(len(shown), cfg.num_judgments)
    prompts = [
        render_judge_prompt(instruction, shown[s.first], shown[s.second], cfg.judge_template) for s in slots
    ]
    return prompts, slots
