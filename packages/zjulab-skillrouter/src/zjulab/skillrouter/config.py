"""Typed configuration of the router, the miner and the two trainers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zjulab.common.errors import ConfigError
from zjulab.skillrouter.formatting import Fields
from zjulab.skillrouter.profiles import get_profile

__all__ = [
    "MiningConfig",
    "RouterConfig",
    "TrainEncoderConfig",
    "TrainRerankerConfig",
]


def _positive(**values: float) -> None:
    for name, v in values.items():
        if v <= 0:
            raise ConfigError(f"{name} must be positive, got {v!r}")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass
class RouterConfig:
    """Settings of :class:`~zjulab.skillrouter.router.SkillRouter`.

    Args:
        profile: What the models are fed (:mod:`zjulab.skillrouter.profiles`):
            ``"skillrouter"`` (the released SkillRouter models, as the authors' evaluation code
            feeds them), ``"qwen3"`` (the base Qwen3 cards) or ``"embedded"`` (MiniLM + SmolLM2).
            Every budget, token limit and the query prompt left ``None`` come from it.
        retriever: First stage: ``"dense"`` (bi-encoder + faiss), ``"bm25"``, or ``"hybrid"``
            (reciprocal-rank fusion of the two).
        rerank: Run the second stage (reranker over the first ``rerank_k`` candidates).
        fields: ``"full"`` (name, description, body) or the ``"name_description"`` ablation;
            applies to both stages and to BM25.
        retrieve_k: Candidates the first stage returns (SkillRouter's retrieval depth).
        rerank_k: Candidates the reranker scores; the rest keep their retrieval order.
        index_desc_max: Description characters in the encoder/BM25 text.
        index_body_max: Body characters in the encoder/BM25 text.
        rerank_desc_max: Description characters in the reranker document.
        rerank_body_max: Body characters in the reranker document.
        query_max_chars: Query characters kept.
        query_prompt: Text put before every query for the encoder (``None``: the profile's,
            also for an encoder passed in already loaded).
        encoder_max_length: Encoder token limit for encoders loaded by name.
        reranker_max_length: Reranker token limit for rerankers loaded by name.
        index_type: faiss index: ``"flat"`` (exact inner product), ``"hnsw"`` or ``"ivf"``.
        hnsw_m: HNSW graph degree.
        hnsw_ef_construction: HNSW build beam width.
        hnsw_ef_search: HNSW query beam width.
        ivf_nlist: IVF cells; 0 picks ``4·sqrt(n)`` capped so each cell gets 39 training points.
        ivf_nprobe: IVF cells visited per query.
        faiss_gpu: Move the faiss index to GPU when a faiss GPU build and a GPU are present.
        rrf_k: Reciprocal-rank-fusion constant.
        bm25_k1: BM25 term-frequency saturation.
        bm25_b: BM25 length normalisation.
        encode_batch_size: Texts per encoder batch.
        rerank_batch_size: Pairs per reranker batch.
        show_progress: Progress bars (``None``: only on a terminal).
    """

    profile: str = "skillrouter"  # the real default models
    retriever: Literal["dense", "bm25", "hybrid"] = "dense"  # the paper's first stage
    rerank: bool = True  # the second stage is where most Hit@1 comes from
    fields: Fields = "full"  # the body is the decisive signal
    retrieve_k: int = 50  # the SkillRouter retrieval protocol (top-50)
    rerank_k: int = 20  # the SkillRouter rerank protocol (top-20)
    index_desc_max: int | None = None  # profile (authors' eval: 500)
    index_body_max: int | None = None  # profile (authors' eval: 8000)
    rerank_desc_max: int | None = None  # profile (500)
    rerank_body_max: int | None = None  # profile (2000)
    query_max_chars: int | None = None  # profile (2000)
    query_prompt: str | None = None  # profile
    encoder_max_length: int | None = None  # profile (4096 for the SkillRouter encoder)
    reranker_max_length: int | None = None  # profile (4096 for the SkillRouter reranker)
    index_type: Literal["flat", "hnsw", "ivf"] = "flat"  # exact search is fast enough to ~100K
    hnsw_m: int = 32  # faiss's usual degree; recall@50 > 0.95 on 80K random vectors
    hnsw_ef_construction: int = 200  # build quality over build speed
    hnsw_ef_search: int = 128  # must exceed retrieve_k for good recall
    ivf_nlist: int = 0  # auto
    ivf_nprobe: int = 16  # ~recall 0.9 at 4·sqrt(n) cells
    faiss_gpu: bool = False  # CPU unless asked: faiss-gpu is a separate install
    rrf_k: int = 60  # the constant of Cormack et al. (2009)
    bm25_k1: float = 1.5  # bm25s default
    bm25_b: float = 0.75  # bm25s default
    encode_batch_size: int = 32  # fits a 0.6B encoder at 512 tokens in 8 GB
    rerank_batch_size: int = 8  # fits a 0.6B reranker at 1024 tokens in 8 GB
    show_progress: bool | None = None  # quiet in logs and CI

    def __post_init__(self) -> None:
        prof = get_profile(self.profile)
        for name in (
            "index_desc_max",
            "index_body_max",
            "rerank_desc_max",
            "rerank_body_max",
            "query_max_chars",
            "encoder_max_length",
            "reranker_max_length",
        ):
            if getattr(self, name) is None:
                setattr(self, name, getattr(prof, name))
        if self.query_prompt is None:
            self.query_prompt = prof.query_prompt
        _choice("retriever", self.retriever, ("dense", "bm25", "hybrid"))
        _choice("fields", self.fields, ("full", "name_description"))
        _choice("index_type", self.index_type, ("flat", "hnsw", "ivf"))
        _positive(
            retrieve_k=self.retrieve_k,
            rerank_k=self.rerank_k,
            query_max_chars=self.query_max_chars,
            encoder_max_length=self.encoder_max_length,
            reranker_max_length=self.reranker_max_length,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construction=self.hnsw_ef_construction,
            hnsw_ef_search=self.hnsw_ef_search,
            ivf_nprobe=self.ivf_nprobe,
            rrf_k=self.rrf_k,
            bm25_k1=self.bm25_k1,
            encode_batch_size=self.encode_batch_size,
            rerank_batch_size=self.rerank_batch_size,
        )
        if self.rerank_k > self.retrieve_k:
            raise ConfigError(f"rerank_k={self.rerank_k} > retrieve_k={self.retrieve_k}")
        for name in ("index_desc_max", "index_body_max", "rerank_desc_max", "rerank_body_max", "ivf_nlist"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.bm25_b <= 1.0:
            raise ConfigError(f"bm25_b must be in [0, 1], got {self.bm25_b!r}")

    @property
    def needs_encoder(self) -> bool:
        """Whether the first stage uses the dense encoder."""
        return self.retriever in ("dense", "hybrid")


@dataclass
class MiningConfig:
    """How many hard negatives to mine per query and from where (SkillRouter's 4/3/2/1 mix).

    Args:
        n_dense: Negatives from the encoder's top ranks.
        n_bm25: Negatives from BM25's top ranks.
        n_category: Negatives from the positive's category (skipped when skills have none).
        n_random: Uniformly random negatives.
        filter_false_negatives: Drop candidates the current encoder scores above the positive
            (likely unlabelled positives).
        search_depth: How deep in each ranking to look for candidates.
        seed: Seed of the category and random draws.
    """

    n_dense: int = 4  # paper's mix: 10 negatives
    n_bm25: int = 3
    n_category: int = 2
    n_random: int = 1
    filter_false_negatives: bool = True  # the paper's false-negative filter
    search_depth: int = 50  # deep enough to refill after filtering
    seed: int = 0  # reproducible draws

    def __post_init__(self) -> None:
        for name in ("n_dense", "n_bm25", "n_category", "n_random"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.total == 0:
            raise ConfigError("at least one negative source must have a positive count")
        _positive(search_depth=self.search_depth)

    @property
    def total(self) -> int:
        """Negatives per query when every source has enough candidates."""
        return self.n_dense + self.n_bm25 + self.n_category + self.n_random


@dataclass
class TrainEncoderConfig:
    """Settings of :func:`~zjulab.skillrouter.encoder_training.train_encoder`.

    Args:
        output_dir: Where the final model goes.
        profile: The profile whose query prompt and text budgets training uses (those routing uses).
        temperature: InfoNCE temperature τ; the loss scale is ``1/τ``.
        epochs: Passes over the examples.
        max_steps: Stop after this many optimizer steps (``-1``: run all epochs).
        batch_size: Queries per batch; other queries' positives and negatives are in-batch
            negatives too.
        learning_rate: Peak learning rate.
        warmup_ratio: Fraction of steps with linear warm-up.
        weight_decay: AdamW weight decay.
        lora: Train a peft LoRA adapter instead of all weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        fields: Skill fields in the training text (as at index time).
        desc_max: Description characters in the skill text (``None``: the profile's).
        body_max: Body characters in the skill text (``None``: the profile's).
        query_prompt: Instruction put before queries (``None``: the profile's).
        bf16: Mixed precision on supporting GPUs.
        seed: Training seed.
        logging_steps: Log the loss every this many steps.
        show_progress: Show the trainer's step progress bar.
        overwrite: Replace a model an earlier run wrote to ``output_dir`` (a folder this
            library did not write is never replaced).
    """

    output_dir: str = "skillrouter-encoder"
    profile: str = "skillrouter"
    temperature: float = 0.05  # SkillRouter's InfoNCE τ
    epochs: float = 1.0  # one pass already moves a pretrained embedder far
    max_steps: int = -1
    batch_size: int = 16  # in-batch negatives grow with it
    learning_rate: float = 2e-5  # usual full fine-tuning rate for 0.1–0.6B encoders
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    lora: bool = False  # full fine-tuning is cheap at 0.6B
    lora_r: int = 16
    lora_alpha: int = 32
    fields: Fields = "full"
    desc_max: int | None = None  # profile
    body_max: int | None = None  # profile
    query_prompt: str | None = None  # profile: the prompt routing uses
    bf16: bool = False  # CPU-safe default
    seed: int = 0
    logging_steps: int = 10
    show_progress: bool = True  # a step bar: training runs for minutes
    overwrite: bool = False

    def __post_init__(self) -> None:
        prof = get_profile(self.profile)
        self.desc_max = prof.index_desc_max if self.desc_max is None else self.desc_max
        self.body_max = prof.index_body_max if self.body_max is None else self.body_max
        self.query_prompt = prof.query_prompt if self.query_prompt is None else self.query_prompt
        _positive(
            temperature=self.temperature,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            logging_steps=self.logging_steps,
        )
        _choice("fields", self.fields, ("full", "name_description"))
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be -1 or positive, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class TrainRerankerConfig:
    """Settings of :func:`~zjulab.skillrouter.reranker_training.train_reranker`.

    Args:
        output_dir: Where the final model goes.
        profile: The profile whose reranker prompt, budgets and token limit training uses.
        loss: ``"listwise"`` (softmax cross-entropy over one positive and its negatives, the
            paper's choice) or ``"pointwise"`` (binary cross-entropy per pair).
        kind: ``"yes_no"`` (causal LM, score = logit(yes) − logit(no)) or ``"cross_encoder"``
            (sequence classification).
        group_size: Documents per query: 1 positive + ``group_size - 1`` negatives.
        epochs: Passes over the examples.
        max_steps: Stop after this many optimizer steps (``-1``: run all epochs).
        batch_size: Queries per batch (each brings ``group_size`` documents).
        gradient_accumulation_steps: Batches per optimizer step.
        learning_rate: Peak learning rate.
        warmup_ratio: Fraction of steps with linear warm-up.
        max_length: Prompt length limit in tokens; the document is cut, never the prompt's end
            (``None``: the profile's).
        desc_max: Description characters in the document (``None``: the profile's).
        body_max: Body characters in the document (``None``: the profile's).
        fields: Skill fields in the document.
        lora: Train a peft LoRA adapter instead of all weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        bf16: Mixed precision on supporting GPUs.
        seed: Training seed.
        logging_steps: Log the loss every this many steps.
        show_progress: Show the trainer's step progress bar.
        overwrite: Replace a model an earlier run wrote to ``output_dir`` (a folder this
            library did not write is never replaced).
    """

    output_dir: str = "skillrouter-reranker"
    profile: str = "skillrouter"
    loss: Literal["listwise", "pointwise"] = "listwise"  # the paper's better variant
    kind: Literal["yes_no", "cross_encoder"] = "yes_no"  # matches the Qwen3-Reranker family
    group_size: int = 8  # 1 positive + 7 mined negatives
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 2  # 16 documents a step at group_size 8
    gradient_accumulation_steps: int = 4
    learning_rate: float = 1e-5  # full fine-tuning of a 0.6B LM
    warmup_ratio: float = 0.1
    max_length: int | None = None  # profile (4096)
    desc_max: int | None = None  # profile (500)
    body_max: int | None = None  # profile (2000)
    fields: Fields = "full"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    bf16: bool = False
    seed: int = 0
    logging_steps: int = 10
    show_progress: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        prof = get_profile(self.profile)
        self.max_length = prof.reranker_max_length if self.max_length is None else self.max_length
        self.desc_max = prof.rerank_desc_max if self.desc_max is None else self.desc_max
        self.body_max = prof.rerank_body_max if self.body_max is None else self.body_max
        _choice("loss", self.loss, ("listwise", "pointwise"))
        _choice("kind", self.kind, ("yes_no", "cross_encoder"))
        _choice("fields", self.fields, ("full", "name_description"))
        _positive(
            epochs=self.epochs,
            batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            logging_steps=self.logging_steps,
        )
        if self.group_size < 2:
            raise ConfigError(f"group_size must be >= 2 (a positive and a negative), got {self.group_size}")
        if self.max_length < 32:
            raise ConfigError(f"max_length must be >= 32, got {self.max_length}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be -1 or positive, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
