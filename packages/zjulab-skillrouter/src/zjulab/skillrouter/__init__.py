"""zjulab.skillrouter: two-stage skill routing over large skill pools (SkillRouter).

Stage 1 retrieves candidates with a bi-encoder over faiss from ``name | description | body``
texts (BM25 and hybrid baselines behind the same interface); stage 2 reranks them with a
cross-encoder or a causal-LM yes/no scorer that also reads the body.
"""

from zjulab.skillrouter.bm25 import BM25Index
from zjulab.skillrouter.config import MiningConfig, RouterConfig, TrainEncoderConfig, TrainRerankerConfig
from zjulab.skillrouter.demo_pool import DemoPool, load_demo_pool
from zjulab.skillrouter.errors import (
    DuplicateSkillError,
    EmptyPoolError,
    EncoderMismatchError,
    IndexExistsError,
    IndexFormatError,
    IndexIntegrityError,
    InvalidKError,
    InvalidSkillError,
    NotAnIndexError,
    NotIndexedError,
    SkillParseError,
    SkillRouterError,
)
from zjulab.skillrouter.evaluation import (
    EvalReport,
    Task,
    evaluate,
    evaluate_rankings,
    format_table,
    load_tasks,
)
from zjulab.skillrouter.formatting import format_query, format_skill
from zjulab.skillrouter.fusion import reciprocal_rank_fusion
from zjulab.skillrouter.metrics import (
    compute_metrics,
    full_coverage_at_k,
    hit_at_k,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)
from zjulab.skillrouter.mining import TrainingExample, mine_hard_negatives
from zjulab.skillrouter.models import (
    DEFAULT_ENCODER_ID,
    DEFAULT_RERANKER_ID,
    FALLBACK_ENCODER_ID,
    FALLBACK_RERANKER_ID,
    embedded_encoder,
    embedded_reranker,
    load_skill_encoder,
    load_skill_reranker,
)
from zjulab.skillrouter.router import RoutedSkill, SkillRouter
from zjulab.skillrouter.skill import (
    Skill,
    load_skills,
    load_skills_dir,
    load_skills_jsonl,
    parse_skill_md,
    skills_from_records,
    validate_pool,
)
from zjulab.skillrouter.vector_index import VectorIndex, brute_force_search

__version__ = "0.1.0"

TORCH_EXTRA = "pip install 'zjulab-skillrouter[torch]'"
"""The install line of the extra that brings local models and training."""

_LAZY = {
    "EncoderTrainResult": "zjulab.skillrouter.encoder_training",
    "train_encoder": "zjulab.skillrouter.encoder_training",
    "RerankerTrainResult": "zjulab.skillrouter.reranker_training",
    "train_reranker": "zjulab.skillrouter.reranker_training",
}


def __dir__() -> list[str]:
    return sorted([*__all__, *_LAZY])


def __getattr__(name: str) -> object:
    # training needs torch: import it only when asked, so `import zjulab.skillrouter` (and a
    # star import, which these names are not part of) stays lean
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zjulab.skillrouter' has no attribute {name!r}")


__all__ = [
    "BM25Index",
    "DEFAULT_ENCODER_ID",
    "DEFAULT_RERANKER_ID",
    "DemoPool",
    "DuplicateSkillError",
    "EmptyPoolError",
    "EncoderMismatchError",
    "EvalReport",
    "FALLBACK_ENCODER_ID",
    "FALLBACK_RERANKER_ID",
    "IndexExistsError",
    "IndexFormatError",
    "IndexIntegrityError",
    "InvalidKError",
    "InvalidSkillError",
    "MiningConfig",
    "NotAnIndexError",
    "NotIndexedError",
    "RoutedSkill",
    "RouterConfig",
    "Skill",
    "SkillParseError",
    "SkillRouter",
    "SkillRouterError",
    "Task",
    "TrainEncoderConfig",
    "TrainRerankerConfig",
    "TrainingExample",
    "VectorIndex",
    "brute_force_search",
    "compute_metrics",
    "embedded_encoder",
    "embedded_reranker",
    "evaluate",
    "evaluate_rankings",
    "format_query",
    "format_skill",
    "format_table",
    "full_coverage_at_k",
    "hit_at_k",
    "load_demo_pool",
    "load_skill_encoder",
    "load_skill_reranker",
    "load_skills",
    "load_skills_dir",
    "load_skills_jsonl",
    "load_tasks",
    "mean_metrics",
    "mine_hard_negatives",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_skill_md",
    "recall_at_k",
    "reciprocal_rank_fusion",
    "skills_from_records",
    "validate_pool",
]
