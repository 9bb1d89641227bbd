"""zjulab.conifer: complex-constraint instruction data, verified and ordered easy-to-hard (Conifer).

A resumable curation pipeline that runs on any chat model (reframe seed queries, generate
constraints, recombine them into five difficulty levels, filter, answer, and collect internal
and external process feedback), the IFEval constraint checkers as an extensible registry with
IFEval scoring, a contamination guard, and export of easy-to-hard training conversations for
TRL.
"""

from zjulab.conifer.checkers import (
    CheckerRegistry,
    ConstraintCheck,
    InstructionSpec,
    default_registry,
    loose_variants,
)
from zjulab.conifer.config import PipelineConfig
from zjulab.conifer.contamination import ContaminationGuard, OverlapHit, normalize_text
from zjulab.conifer.curriculum import (
    build_conversations,
    easy_to_hard,
    external_feedback,
    internal_feedback,
    normalize_record,
    single_turn,
    to_dataset,
)
from zjulab.conifer.errors import (
    CheckpointError,
    ConiferConfigError,
    ConiferError,
    ConiferInputError,
    InstructionArgumentError,
    UnknownInstructionError,
)
from zjulab.conifer.hub import dataset_card, push_to_hub
from zjulab.conifer.ifeval import (
    IFEvalPrompt,
    IFEvalResult,
    evaluate_ifeval,
    generate_ifeval,
    load_ifeval,
    load_prompt_texts,
    per_type_table,
)
from zjulab.conifer.language import detect_language
from zjulab.conifer.pipeline import (
    Pipeline,
    PipelineResult,
    RequestCache,
    StageStats,
    load_seeds,
    request_key,
)
from zjulab.conifer.sentences import SentenceSplitter, count_sentences, count_words, split_sentences
from zjulab.conifer.stages import (
    AnswerStage,
    ConstraintStage,
    ContaminationStage,
    Dropped,
    ExternalFeedbackStage,
    FilterStage,
    FormatNumberRewriteStage,
    FormatNumberStage,
    IFEvalAnswerStage,
    InternalFeedbackStage,
    LocalStage,
    ModelStage,
    RecombineStage,
    ReframeStage,
    Rejection,
    SeedStage,
    Stage,
    WeakAnswerStage,
    default_stages,
)
from zjulab.conifer.training import (
    FitReport,
    check_dpo_rows,
    check_sft_rows,
    dpo_pairs,
    dpo_trainer,
    fit_conversations,
    sft_trainer,
)

__version__ = "0.1.0"

__all__ = [
    "AnswerStage",
    "CheckerRegistry",
    "CheckpointError",
    "ConiferConfigError",
    "ConiferError",
    "ConiferInputError",
    "ConstraintCheck",
    "ConstraintStage",
    "ContaminationStage",
    "Dropped",
    "ContaminationGuard",
    "ExternalFeedbackStage",
    "FitReport",
    "FilterStage",
    "FormatNumberRewriteStage",
    "FormatNumberStage",
    "IFEvalAnswerStage",
    "IFEvalPrompt",
    "IFEvalResult",
    "InstructionArgumentError",
    "InstructionSpec",
    "InternalFeedbackStage",
    "LocalStage",
    "ModelStage",
    "OverlapHit",
    "Pipeline",
    "PipelineConfig",
    "PipelineResult",
    "RecombineStage",
    "ReframeStage",
    "RequestCache",
    "Rejection",
    "SeedStage",
    "SentenceSplitter",
    "Stage",
    "StageStats",
    "UnknownInstructionError",
    "WeakAnswerStage",
    "build_conversations",
    "count_sentences",
    "count_words",
    "dataset_card",
    "default_registry",
    "default_stages",
    "detect_language",
    "check_dpo_rows",
    "check_sft_rows",
    "dpo_pairs",
    "dpo_trainer",
    "fit_conversations",
    "easy_to_hard",
    "evaluate_ifeval",
    "generate_ifeval",
    "external_feedback",
    "internal_feedback",
    "load_ifeval",
    "load_prompt_texts",
    "load_seeds",
    "loose_variants",
    "normalize_record",
    "normalize_text",
    "per_type_table",
    "push_to_hub",
    "request_key",
    "sft_trainer",
    "single_turn",
    "split_sentences",
    "to_dataset",
]
