"""zjulab.rtt: Rubrics to Tokens, token-level rubric credit for GRPO on TRL.

A relevance discriminator predicts which response tokens bear on each rubric; intra-sample
token group normalisation turns relevance and rubric outcomes into token advantages; and
:class:`RTTGRPOTrainer` adds them to TRL's GRPO advantage.
"""

from zjulab.rtt.config import TOKEN_NORMS, DiscriminatorConfig, RTTConfig, TokenNorm
from zjulab.rtt.discriminator import DEFAULT_DISCRIMINATOR_ID, DEFAULT_INSTRUCTION, RelevanceDiscriminator
from zjulab.rtt.discriminator_trainer import DiscriminatorTrainer, TokenScores, encode_examples, token_f1
from zjulab.rtt.display import colorize_credit, token_pieces
from zjulab.rtt.errors import (
    DiscriminatorStoreError,
    LabelAlignmentError,
    RTTConfigError,
    RTTError,
    RubricError,
    ShapeError,
    UnknownCheckerError,
)
from zjulab.rtt.ifeval import load_ifeval
from zjulab.rtt.labels import (
    RelevanceExample,
    SpanAnnotation,
    SpanAnnotator,
    labels_from_offsets,
    locate_substrings,
    token_labels,
)
from zjulab.rtt.metrics import RubricAccuracy, rubric_accuracy
from zjulab.rtt.normalization import (
    combine_advantages,
    group_token_norm,
    intra_sample_token_norm,
    rubric_mean_group_token_norm,
    signed_relevance,
    softmax_rubrics_norm,
    token_advantages,
)
from zjulab.rtt.prompts import RubricPrompt, load_rubric_prompts, to_dataset_rows
from zjulab.rtt.relevance import (
    RelevanceModel,
    RelevanceQuery,
    RoutedRelevance,
    ScoredText,
    SpanRelevance,
    UniformRelevance,
    project_weights,
    token_char_offsets,
)
from zjulab.rtt.reward import RubricReward, ScoreBatch
from zjulab.rtt.rubrics import CHECKERS, CheckResult, Rubric, parse_rubrics, register_checker, run_check
from zjulab.rtt.synthetic import COLOUR_CRITERION, colour_examples
from zjulab.rtt.trainer import RTTGRPOTrainer, TokenCredit

__version__ = "0.1.0"

__all__ = [
    "CHECKERS",
    "COLOUR_CRITERION",
    "CheckResult",
    "DEFAULT_DISCRIMINATOR_ID",
    "DEFAULT_INSTRUCTION",
    "DiscriminatorConfig",
    "DiscriminatorStoreError",
    "DiscriminatorTrainer",
    "LabelAlignmentError",
    "RTTConfig",
    "RTTConfigError",
    "RTTError",
    "RTTGRPOTrainer",
    "RelevanceDiscriminator",
    "RelevanceExample",
    "RelevanceModel",
    "RelevanceQuery",
    "RoutedRelevance",
    "Rubric",
    "RubricAccuracy",
    "RubricError",
    "RubricPrompt",
    "RubricReward",
    "ScoreBatch",
    "ScoredText",
    "ShapeError",
    "SpanAnnotation",
    "SpanAnnotator",
    "SpanRelevance",
    "TOKEN_NORMS",
    "TokenCredit",
    "TokenNorm",
    "TokenScores",
    "UniformRelevance",
    "UnknownCheckerError",
    "colorize_credit",
    "colour_examples",
    "combine_advantages",
    "encode_examples",
    "group_token_norm",
    "intra_sample_token_norm",
    "labels_from_offsets",
    "load_ifeval",
    "load_rubric_prompts",
    "locate_substrings",
    "parse_rubrics",
    "project_weights",
    "register_checker",
    "rubric_accuracy",
    "rubric_mean_group_token_norm",
    "run_check",
    "signed_relevance",
    "softmax_rubrics_norm",
    "to_dataset_rows",
    "token_advantages",
    "token_char_offsets",
    "token_f1",
    "token_labels",
    "token_pieces",
]
