"""zjulab.serl: Self-Examining Reinforcement Learning.

One policy is both Actor and Judge: the Actor samples N responses per prompt, the same policy
judges every pair of them in both orders, the Actor is rewarded with a length-controlled
Copeland score and the Judge with a self-consistency reward. The pure reward functions work
without training; :class:`SERLTrainer` adds the judge rollouts and loss to TRL's GRPOTrainer.
"""

from typing import TYPE_CHECKING, Any

from zjulab.serl.answers import Answer, AnswerStore, ask
from zjulab.serl.config import DEFAULT_JUDGE_TEMPLATE, JudgeConfig
from zjulab.serl.errors import SERLConfigError, SERLError, SERLInputError, SERLRemoteError, SERLStoreError
from zjulab.serl.evaluation import (
    PairwiseRecord,
    WinRateResult,
    generate_outputs,
    length_controlled_win_rate,
    pairwise_win_rate,
    read_alpacaeval_outputs,
    write_alpacaeval_outputs,
    write_annotations,
)
from zjulab.serl.judge import CopelandJudge, GroupJudgment, format_matrix, score_group
from zjulab.serl.pairs import (
    JudgmentSlot,
    build_pairs,
    judge_prompts,
    num_judge_prompts,
    render_judge_prompt,
    strip_reasoning,
    word_count,
)
from zjulab.serl.rewards import (
    JudgeDiagnostics,
    actor_rewards,
    copeland_rewards,
    group_advantages,
    judge_diagnostics,
    judge_rewards,
    length_controlled_rewards,
    verdict_matrix,
)
from zjulab.serl.schedule import loss_weights
from zjulab.serl.verdict import parse_verdict, parse_verdicts

if TYPE_CHECKING:  # imported lazily: TRL takes seconds to import
    from zjulab.serl.serl_config import SERLConfig
    from zjulab.serl.trainer import SERLTrainer

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "AnswerStore",
    "CopelandJudge",
    "DEFAULT_JUDGE_TEMPLATE",
    "GroupJudgment",
    "JudgeConfig",
    "JudgeDiagnostics",
    "JudgmentSlot",
    "PairwiseRecord",
    "SERLConfig",
    "SERLConfigError",
    "SERLError",
    "SERLInputError",
    "SERLRemoteError",
    "SERLStoreError",
    "SERLTrainer",
    "WinRateResult",
    "actor_rewards",
    "ask",
    "build_pairs",
    "copeland_rewards",
    "format_matrix",
    "generate_outputs",
    "group_advantages",
    "judge_diagnostics",
    "judge_prompts",
    "judge_rewards",
    "length_controlled_rewards",
    "length_controlled_win_rate",
    "loss_weights",
    "num_judge_prompts",
    "pairwise_win_rate",
    "parse_verdict",
    "parse_verdicts",
    "read_alpacaeval_outputs",
    "render_judge_prompt",
    "score_group",
    "strip_reasoning",
    "verdict_matrix",
    "word_count",
    "write_alpacaeval_outputs",
    "write_annotations",
]

_LAZY = {"SERLConfig": "zjulab.serl.serl_config", "SERLTrainer": "zjulab.serl.trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zjulab.serl' has no attribute {name!r}")
