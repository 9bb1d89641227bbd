"""Configuration dataclasses of zjulab-memtrace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zjulab.common.errors import ConfigError

__all__ = ["AttributionConfig", "BenchConfig", "PipelineConfig"]


@dataclass
class AttributionConfig:
    """Settings of the iterative attribution search.

    Args:
        max_rounds: Judge rounds before the descent stops.
        window: Hops of producers added to the suspects each round (the suspect subgraph).
        verify: Test candidates by replay; without it the candidates are the decisive set.
        widen: When no set of earliest candidates rescues the answer, also try the other
            faulty operations.
        max_set_size: Largest decisive set tried.
        max_replays: Replay budget per attribution.
    """

    max_rounds: int = 16  # deeper than any reference pipeline (at most 8 levels)
    window: int = field(default=1, metadata={"help": "1 shows each suspect with its direct producers"})
    verify: bool = True  # counterfactual replay is what separates a cause from a symptom
    widen: bool = True  # a judge that mislabels origin still gets a chance to be verified
    max_set_size: int = 3  # two-fault cases need 2; 3 bounds the subsets at C(n, 3)
    max_replays: int = 64  # replays of the reference pipelines take milliseconds

    def __post_init__(self) -> None:
        for name in ("max_rounds", "max_set_size", "max_replays"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window < 0:
            raise ConfigError(f"window must be >= 0, got {self.window}")


@dataclass
class PipelineConfig:
    """Settings shared by the reference pipelines.

    Args:
        top_k: Memories (or chunks) retrieved per question.
        min_content_words: Content words a turn needs to be kept by the clean ``extract`` and
            ``compress`` steps; shorter turns are small talk, so the clean pipelines also drop
            lines and "an operation lost a line" is no give-away of the planted fault.
        dedup_threshold: Cosine above which the Mem0-style update replaces an old memory with
            a new one instead of adding it.
        chunk_turns: Turns per chunk in the flat RAG pipeline.
        max_context_turns: Turns kept by the long-context pipeline (the window of the model).
    """

    top_k: int = 5  # LoCoMo single-hop evidence sits in the top 5 on most questions
    dedup_threshold: float = 0.97  # only near-identical restatements replace a memory
    min_content_words: int = 3  # extract / compress drop turns with fewer (small talk)
    chunk_turns: int = 2  # a question and its reply stay in one chunk
    max_context_turns: int = 400  # more than the sessions of one benchmark case

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise ConfigError(f"dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.chunk_turns < 1:
            raise ConfigError(f"chunk_turns must be >= 1, got {self.chunk_turns}")
        if self.max_context_turns < 1:
            raise ConfigError(f"max_context_turns must be >= 1, got {self.max_context_turns}")


@dataclass
class BenchConfig:
    """Settings of the reduced MemTraceBench builder.

    Args:
        sessions_per_case: Sessions given to each case: the evidence session plus the
            sessions just before it.
        max_questions: Questions drawn from LoCoMo per pipeline (before filtering).
        min_answer_recall: Share of the gold answer the evidence turn must hold (strict check) for a question
            to be used (keeps questions answerable by the extractive reader).
        categories: LoCoMo QA categories used (1 multi-hop, 4 single-hop by LoCoMo's labels).
        pipelines: Reference pipelines to run.
        controls_per_pipeline: Unfaulted control cases per pipeline.
        seed: Seed for question sampling and fault placement.
    """

    sessions_per_case: int = 3  # evidence session + 2 distractor sessions: ~8 operations a case
    max_questions: int = 60  # enough to keep >= 150 faulted cases after filtering
    min_answer_recall: float = 1.0  # the whole answer must be in the evidence turn
    categories: tuple[int, ...] = (1, 4)
    pipelines: tuple[Literal["mem0", "rag", "long_context"], ...] = ("mem0", "rag", "long_context")
    controls_per_pipeline: int = 10  # enough controls to catch an attributor that always blames
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sessions_per_case < 1:
            raise ConfigError(f"sessions_per_case must be >= 1, got {self.sessions_per_case}")
        if self.max_questions < 1:
            raise ConfigError(f"max_questions must be >= 1, got {self.max_questions}")
        if not 0.0 < self.min_answer_recall <= 1.0:
            raise ConfigError(f"min_answer_recall must be in (0, 1], got {self.min_answer_recall}")
        bad = [p for p in self.pipelines if p not in ("mem0", "rag", "long_context")]
        if bad or not self.pipelines:
            raise ConfigError(
                f"pipelines must be a non-empty subset of mem0/rag/long_context, got {self.pipelines}"
            )
        if self.controls_per_pipeline < 0:
            raise ConfigError(f"controls_per_pipeline must be >= 0, got {self.controls_per_pipeline}")
