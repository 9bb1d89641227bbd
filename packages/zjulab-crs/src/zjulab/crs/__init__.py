"""zjulab.crs: user-needs-centric conversational recommendation (U-NEED).

Validated loaders for U-NEED's dialogue, knowledge, behaviour and task-sample files plus a
synthetic data set in the same format; the five tasks (understanding, elicitation,
recommendation, generation, evaluation), each with a baseline, a trainable model and the
paper's metrics; LLM variants of tasks 1, 2 and 4 through any chat model.
"""

from zjulab.crs.config import (
    ElicitationConfig,
    GeneratorConfig,
    QualityConfig,
    RankerConfig,
    TaggerConfig,
    TrainConfig,
)
from zjulab.crs.crf import LinearChainCRF, bio_constraints
from zjulab.crs.dialogue import (
    Attribute,
    Behaviour,
    Dialogue,
    Item,
    TaskSample,
    Utterance,
    format_pairs,
    parse_pairs,
)
from zjulab.crs.elicitation import AttributeClassifier, FrequencyElicitor
from zjulab.crs.errors import (
    CheckpointError,
    CrsConfigError,
    CrsError,
    DataFormatError,
    MetricInputError,
    MissingScoresError,
    NotTrainedError,
    UnknownLabelError,
)
from zjulab.crs.generation import ResponseGenerator, RetrievalResponder
from zjulab.crs.llm import LLMElicitor, LLMResponder, LLMUnderstanding
from zjulab.crs.loaders import (
    UNeedCorpus,
    load_behaviours,
    load_dialogues,
    load_items,
    load_quality_scores,
    load_task_samples,
    load_uneed_dir,
    save_behaviours,
    save_dialogues,
    save_items,
    save_quality_scores,
    save_task_samples,
    save_uneed_dir,
)
from zjulab.crs.metrics import (
    PRF,
    bleu,
    count_all_tied,
    distinct_n,
    hit_at_k,
    mrr_at_k,
    multilabel_prf,
    ndcg_at_k,
    pair_prf,
    pearson,
    rank_candidates,
    span_prf,
    spearman,
)
from zjulab.crs.quality import QualityRegressor, Ruber, RuberScorer
from zjulab.crs.recommendation import AttributeMatchRanker, BiEncoderRanker
from zjulab.crs.report import evaluate_by_category, format_table
from zjulab.crs.samples import (
    TASKS,
    ElicitationExample,
    EvaluationExample,
    GenerationExample,
    RecommendationExample,
    TaskSamples,
    UnderstandingExample,
    build_task_samples,
    split_overlap,
    task_examples,
)
from zjulab.crs.suite import SuiteConfig, TaskResult, category_table, five_task_table, run_suite
from zjulab.crs.synthetic import SyntheticConfig, synthetic_corpus
from zjulab.crs.tagger import LexiconTagger, SpanTagger
from zjulab.crs.training import TrainHistory

__version__ = "0.1.0"

__all__ = [
    "Attribute",
    "AttributeClassifier",
    "AttributeMatchRanker",
    "Behaviour",
    "BiEncoderRanker",
    "CheckpointError",
    "CrsConfigError",
    "CrsError",
    "DataFormatError",
    "Dialogue",
    "ElicitationConfig",
    "ElicitationExample",
    "EvaluationExample",
    "FrequencyElicitor",
    "GenerationExample",
    "GeneratorConfig",
    "Item",
    "LLMElicitor",
    "LLMResponder",
    "LLMUnderstanding",
    "LexiconTagger",
    "LinearChainCRF",
    "MetricInputError",
    "MissingScoresError",
    "NotTrainedError",
    "PRF",
    "QualityConfig",
    "QualityRegressor",
    "RankerConfig",
    "RecommendationExample",
    "ResponseGenerator",
    "RetrievalResponder",
    "Ruber",
    "RuberScorer",
    "SpanTagger",
    "SuiteConfig",
    "SyntheticConfig",
    "TASKS",
    "TaggerConfig",
    "TaskResult",
    "TaskSample",
    "TaskSamples",
    "TrainConfig",
    "TrainHistory",
    "UNeedCorpus",
    "UnderstandingExample",
    "UnknownLabelError",
    "Utterance",
    "bio_constraints",
    "bleu",
    "count_all_tied",
    "build_task_samples",
    "split_overlap",
    "task_examples",
    "category_table",
    "distinct_n",
    "evaluate_by_category",
    "five_task_table",
    "format_pairs",
    "format_table",
    "hit_at_k",
    "load_behaviours",
    "load_dialogues",
    "load_items",
    "load_quality_scores",
    "load_task_samples",
    "load_uneed_dir",
    "mrr_at_k",
    "multilabel_prf",
    "ndcg_at_k",
    "pair_prf",
    "parse_pairs",
    "pearson",
    "rank_candidates",
    "run_suite",
    "save_behaviours",
    "save_dialogues",
    "save_items",
    "save_quality_scores",
    "save_task_samples",
    "save_uneed_dir",
    "span_prf",
    "spearman",
    "synthetic_corpus",
]
