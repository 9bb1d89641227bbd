"""Settings of the SERL reward machinery that do not depend on training.

:class:`JudgeConfig` describes how a group of responses is turned into judge prompts, how the
judge's answers are read and how the Actor reward is computed. The trainer's
:class:`~zjulab.serl.serl_config.SERLConfig` carries the same fields (plus TRL's) and builds a
:class:`JudgeConfig` from them, so pure functions, the ``judge`` command and training agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from zjulab.serl.errors import SERLConfigError

__all__ = ["DEFAULT_JUDGE_TEMPLATE", "JudgeConfig", "check_judge_template"]

DEFAULT_JUDGE_TEMPLATE = (
    "You are comparing two answers written for the same request. Decide which answer a careful "
    "human reader would prefer: judge helpfulness, correctness, relevance and clarity, and do not "
    "reward length for its own sake.\n\n"
    "## Request\n{instruction}\n\n"
    "## Answer 1\n{response_1}\n\n"
    "## Answer 2\n{response_2}\n\n"
    "## Your verdict\n"
    "Reply with the number of the better answer inside a box and nothing else: "
    "\\boxed{1} if Answer 1 is better, \\boxed{2} if Answer 2 is better."
)
"""The default judge prompt. Placeholders: ``{instruction}``, ``{response_1}``, ``{response_2}``
(filled by plain substitution, so other braces in a template need no escaping)."""

_PLACEHOLDERS = ("{instruction}", "{response_1}", "{response_2}")


def check_judge_template(template: str) -> None:
    """Check that a judge template holds each placeholder exactly once.

    Raises:
        SERLConfigError: A placeholder is missing or repeated.
    """
    if not isinstance(template, str):
        raise SERLConfigError(f"judge_template must be a string, got {type(template).__name__}")
    for ph in _PLACEHOLDERS:
        count = template.count(ph)
        if count != 1:
            raise SERLConfigError(
                f"judge_template must contain {ph} exactly once (found {count}); "
                f"placeholders are {', '.join(_PLACEHOLDERS)}"
            )


def check_band(band: tuple[float, float], name: str = "length_band") -> tuple[float, float]:
    """Validate a ``(low, high)`` length-ratio band and return it as floats.

    Raises:
        SERLConfigError: Not two finite numbers with ``0 < low < high``.
    """
    try:
        low, high = (float(x) for x in band)
    except (TypeError, ValueError) as exc:
        raise SERLConfigError(f"{name} must be two numbers (low, high), got {band!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise SERLConfigError(f"{name} must satisfy 0 < low < high, got {band!r}")
    return low, high


BAND_REFERENCES = ("loser", "winner")


def check_band_reference(value: str) -> str:
    """Validate the length band's reference ("loser": the authors' rule, or "winner").

    Raises:
        SERLConfigError: Any other value.
    """
    if value not in BAND_REFERENCES:
        raise SERLConfigError(f"length_band_reference must be 'loser' or 'winner', got {value!r}")
    return value


@dataclass
class JudgeConfig:
    r"""How responses are compared, how verdicts are read and how the Actor is rewarded.

    Args:
        num_judgments: K, judge rollouts per unordered pair of responses; half are asked with the
            pair in one order and half in the other, so K must be even.
        actor_reward: ``"length_controlled"`` (the paper's reward: each win weighted by the length
            ratio, counted only inside the band) or ``"copeland"`` (pairwise-majority
            Copeland score, (pairs won - pairs lost) / (N - 1)).
        length_band: ``(low, high)``: a win of response i over j counts only when
            ``low * len(j) < len(i) < high * len(j)`` (lengths in words; the authors' rule).
        length_band_reference: ``"loser"`` (the band is drawn around the loser's length, as in
            the authors' ``rewards_actor``) or ``"winner"`` (around the winner's length:
            ``low * len(i) < len(j) < high * len(i)``, the rule of zjulab-serl 0.1.0, kept so that
            runs made with it can be reproduced).
        verdict_format: ``"boxed"`` accepts only ``\boxed{1}`` / ``\boxed{2}``; ``"lenient"`` also
            reads JSON (``{"winner": 2}``) and plain phrases (``Answer 1 is better``).
        strip_reasoning: Drop everything up to the last ``reasoning_end`` marker in a response
            before it is judged; a response cut off inside its reasoning is judged as empty. (A verdict is always read after the judge's reasoning, and a
            judge output that stops inside its reasoning has no verdict.)
        reasoning_end: The marker closing a reasoning block.
        reasoning_start: The marker opening a reasoning block.
        reasoning_opened_by_prompt: The judge's chat template opens the reasoning block in the
            prompt (DeepSeek-R1 style), so a judge output without ``reasoning_end`` is unfinished.
        read_truncated: Read a verdict from a judge output cut off at the token limit (the
            authors' code does); by default such an output has no verdict and takes the
            invalid-verdict penalty, as an unfinished answer.
        judge_template: Judge prompt with ``{instruction}``, ``{response_1}``, ``{response_2}``.
        max_new_tokens: Length limit of one verdict when judging through a ``ChatModel``.
        temperature: Sampling temperature of the judge when judging through a ``ChatModel``.
    """

    num_judgments: int = 2  # the smallest K that asks both orders, hence controls position bias
    actor_reward: Literal["length_controlled", "copeland"] = "length_controlled"  # the paper's reward
    length_band: tuple[float, float] = (0.8, 1.2)  # the paper's +-20 % length window
    length_band_reference: Literal["loser", "winner"] = "loser"  # the authors' rewards_actor
    verdict_format: Literal["boxed", "lenient"] = "boxed"  # training must reward the format it asks for
    strip_reasoning: bool = True  # judges see answers, not chains of thought (as in the paper)
    reasoning_end: str = "</think>"  # Qwen3 / DeepSeek-R1 convention
    reasoning_start: str = "<think>"  # Qwen3 convention
    reasoning_opened_by_prompt: bool = False  # Qwen3 writes <think> itself
    read_truncated: bool = False  # a judge output cut off at the token limit is no finished answer
    judge_template: str = DEFAULT_JUDGE_TEMPLATE
    max_new_tokens: int = 256  # room for a short justification before the box
    temperature: float = 0.0  # greedy: a ChatModel judge used for ranking should be repeatable

    def answer_of(self, response: str) -> str:
        """What the Judge is shown of an Actor response (and whose words are counted).

        With ``strip_reasoning``: the text after the last ``reasoning_end``, and nothing for a
        response cut off inside its reasoning (its chain of thought is not an answer).
        """
        if not self.strip_reasoning:
            return response
        from zjulab.serl.pairs import strip_reasoning
        from zjulab.serl.verdict import unfinished_reasoning

        if unfinished_reasoning(
            response,
            self.reasoning_start or None,
            self.reasoning_end,
            opened_by_prompt=self.reasoning_opened_by_prompt,
        ):
            return ""
        return strip_reasoning(response, self.reasoning_end)

    def parse(self, text: str) -> int | None:
        """The verdict in one judge output under these settings (see :func:`~zjulab.serl.verdict.parse_verdict`)."""
        from zjulab.serl.verdict import parse_verdict

        return parse_verdict(
            text,
            lenient=self.verdict_format == "lenient",
            reasoning_end=self.reasoning_end,
            reasoning_start=self.reasoning_start or None,
            reasoning_opened_by_prompt=self.reasoning_opened_by_prompt,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.num_judgments, int) or self.num_judgments < 2 or self.num_judgments % 2:
            raise SERLConfigError(
                f"num_judgments must be an even integer >= 2 (half per order), got {self.num_judgments!r}"
            )
        if self.actor_reward not in ("length_controlled", "copeland"):
            raise SERLConfigError(
                f"actor_reward must be 'length_controlled' or 'copeland', got {self.actor_reward!r}"
            )
        if self.verdict_format not in ("boxed", "lenient"):
            raise SERLConfigError(f"verdict_format must be 'boxed' or 'lenient', got {self.verdict_format!r}")
        self.length_band = check_band(self.length_band)
        check_band_reference(self.length_band_reference)
        check_judge_template(self.judge_template)
        if not self.reasoning_end:
            raise SERLConfigError("reasoning_end must be a non-empty string")
        if self.max_new_tokens <= 0:
            raise SERLConfigError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise SERLConfigError(f"temperature must be >= 0, got {self.temperature}")
