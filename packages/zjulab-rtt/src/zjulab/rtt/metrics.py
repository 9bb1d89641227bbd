"""Instruction-level and rubric-level accuracy of responses on a rubric data set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zjulab.rtt.errors import RubricError
from zjulab.rtt.reward import RubricReward

__all__ = ["RubricAccuracy", "rubric_accuracy"]


@dataclass
class RubricAccuracy:
    """Accuracy of a set of responses.

    Attributes:
        instruction_level: Share of responses that meet every rubric of their prompt.
        rubric_level: Share of (response, rubric) pairs met.
        responses: Responses scored.
        rubrics: (response, rubric) pairs scored.
    """

    instruction_level: float
    rubric_level: float
    responses: int
    rubrics: int


def rubric_accuracy(
    prompts: Sequence[Any],
    responses: Sequence[str],
    rubrics: Sequence[Any],
    *,
    scorer: RubricReward | None = None,
) -> RubricAccuracy:
    """Instruction- and rubric-level accuracy (responses without rubrics are not counted).

    Args:
        prompts: One prompt per response.
        responses: Response texts.
        rubrics: One rubric list per response.
        scorer: Scores judge rubrics (needs a judge); default: checkers only.

    Returns:
        The two accuracies and the counts.

    Raises:
        RubricError: Lengths differ, or a judge rubric meets a scorer without a judge.
    """
    if not responses:
        raise RubricError("no responses to score")
    batch = (scorer or RubricReward()).score(prompts, responses, rubrics)
    met = all_met = n_resp = n_rub = 0
    for i in range(len(batch)):
        m = batch.mask[i] > 0
        s = batch.scores[i][m]
        if s.numel() == 0:
            continue
        n_resp += 1
        n_rub += int(s.numel())
        met += int((s > 0).sum())
        all_met += int(bool((s > 0).all()))
    if n_resp == 0:
        raise RubricError("no response has any rubric")
    return RubricAccuracy(all_met / n_resp, met / n_rub, n_resp, n_rub)
