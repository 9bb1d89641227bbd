"""Contrastive fine-tuning of the first-stage encoder (InfoNCE with mined hard negatives).

The loss is InfoNCE at temperature τ: for query ``q_i`` with positive ``p_i`` and the
candidate set ``D`` = every positive and every hard negative in the batch,

    L = -1/B Σ_i log( exp(cos(q_i, p_i)/τ) / Σ_{d ∈ D} exp(cos(q_i, d)/τ) ),

which is sentence-transformers' ``MultipleNegativesRankingLoss`` with ``scale = 1/τ``
(τ = 0.05 → scale 20, as in SkillRouter). Training runs on ``SentenceTransformerTrainer``
(accelerate underneath: ``accelerate launch`` gives multi-GPU data parallelism).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zjulab.common.deps import require
from zjulab.common.device import DeviceLike, resolve_device
from zjulab.common.errors import ConfigError
from zjulab.skillrouter.config import TrainEncoderConfig
from zjulab.skillrouter.errors import EmptyPoolError
from zjulab.skillrouter.formatting import format_query, format_skill
from zjulab.skillrouter.mining import TrainingExample
from zjulab.skillrouter.trainer_args import warmup_kwargs

torch = require(
    "torch", "pip install 'zjulab-skillrouter[torch]'", feature="zjulab-skillrouter encoder training"
)

__all__ = [
    "EncoderTrainResult",
    "batch_conflicts",
    "build_encoder_dataset",
    "encoder_loss",
    "info_nce_loss",
    "relevance_aware_batches",
    "train_encoder",
]

logger = logging.getLogger(__name__)


def info_nce_loss(queries: torch.Tensor, candidates: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE over cosine similarities; row ``i`` of ``candidates[:B]`` is query ``i``'s positive.

    Args:
        queries: ``[B, d]`` query embeddings.
        candidates: ``[M, d]`` with ``M >= B``: the ``B`` positives first, then any negatives.
        temperature: τ; logits are ``cos / τ``.

    Returns:
        The mean cross-entropy (a scalar tensor).
    """
    if candidates.shape[0] < queries.shape[0]:
        raise ConfigError("candidates must start with one positive per query")
    q = torch.nn.functional.normalize(queries, dim=-1)
    c = torch.nn.functional.normalize(candidates, dim=-1)
    logits = q @ c.T / temperature
    labels = torch.arange(q.shape[0], device=q.device)
    return torch.nn.functional.cross_entropy(logits, labels)


def _texts(
    examples: Sequence[TrainingExample], config: TrainEncoderConfig, n_neg: int
) -> dict[str, list[str]]:
    def fmt(s: Any) -> str:
        return format_skill(s, fields=config.fields, desc_max=config.desc_max, body_max=config.body_max)

    cols: dict[str, list[str]] = {
        "anchor": [format_query(e.query, prompt=config.query_prompt) for e in examples],
        "positive": [fmt(e.positive) for e in examples],
    }
    for j in range(n_neg):
        cols[f"negative_{j + 1}"] = [fmt(e.negatives[j]) for e in examples]
    return cols


def _n_negatives(examples: Sequence[TrainingExample]) -> int:
    if not examples:
        raise EmptyPoolError("no training examples")
    n = min(len(e.negatives) for e in examples)
    if n < max(len(e.negatives) for e in examples):
        logger.info("examples have different negative counts; using the first %d of each", n)
    return n


def build_encoder_dataset(
    examples: Sequence[TrainingExample], config: TrainEncoderConfig | None = None
) -> Any:
    """A ``datasets.Dataset`` with columns ``anchor``, ``positive``, ``negative_1..n``.

    Every example keeps the same number of negatives (the smallest count among them), as
    the loss needs a rectangular batch.
    """
    from datasets import Dataset

    cfg = config or TrainEncoderConfig()
    return Dataset.from_dict(_texts(examples, cfg, _n_negatives(examples)))


def _st_classes() -> tuple[Any, Any]:
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss  # type: ignore[no-redef]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer, MultipleNegativesRankingLoss


def encoder_loss(
    model: Any, examples: Sequence[TrainingExample], config: TrainEncoderConfig | None = None
) -> float:
    """The InfoNCE loss of ``model`` (a ``SentenceTransformer``) on ``examples`` as one batch, no gradient."""
    cfg = config or TrainEncoderConfig()
    cols = _texts(examples, cfg, _n_negatives(examples))
    with torch.no_grad():
        q = model.encode(cols.pop("anchor"), convert_to_tensor=True)
        docs = [t for col in cols.values() for t in col]  # positives first, then negatives
        c = model.encode(docs, convert_to_tensor=True)
    return float(info_nce_loss(q, c, cfg.temperature))


def _conflict(a: TrainingExample, b: TrainingExample) -> bool:
    """Whether ``a`` and ``b`` in one batch would give either a false in-batch negative."""
    ids_a = {a.positive.id, *(n.id for n in a.negatives)}
    ids_b = {b.positive.id, *(n.id for n in b.negatives)}
    rel_a = a.relevant_ids or frozenset({a.positive.id})
    rel_b = b.relevant_ids or frozenset({b.positive.id})
    return a.query == b.query or bool(ids_b & rel_a) or bool(ids_a & rel_b)


def relevance_aware_batches(
    examples: Sequence[TrainingExample], batch_size: int, order: Sequence[int]
) -> list[list[int]]:
    """Cut ``order`` into batches in which no example's text is graded relevant for another's query.

    In-batch negatives of InfoNCE are every other example's positive and negatives; when one of
    them is a positive or a partial (grade-1) match of this query, the loss pushes a relevant
    skill away. Examples that would conflict with the open batch wait for a later one (the idea
    of sentence-transformers' no-duplicates sampler, with the graded relevance as the rule).
    """
    pending = list(order)
    batches: list[list[int]] = []
    while pending:
        batch: list[int] = []
        rest: list[int] = []
        for i in pending:
            if len(batch) < batch_size and not any(_conflict(examples[i], examples[j]) for j in batch):
                batch.append(i)
            else:
                rest.append(i)
        batches.append(batch)
        pending = rest
    return batches


def batch_conflicts(examples: Sequence[TrainingExample], batches: Sequence[Sequence[int]]) -> int:
    """How many (example, in-batch text) pairs are false negatives under ``batches``."""
    n = 0
    for b in batches:
        for i in b:
            rel = examples[i].relevant_ids or frozenset({examples[i].positive.id})
            for j in b:
                if j != i:
                    e = examples[j]
                    n += sum(x in rel for x in {e.positive.id, *(x.id for x in e.negatives)})
    return n


def _sampler_factory(examples: Sequence[TrainingExample]) -> Any:
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class _RelevanceAwareBatchSampler(DefaultBatchSampler):  # type: ignore[misc]
        def __init__(self, dataset: Any, batch_size: int, drop_last: bool, **kw: Any) -> None:
            super().__init__(dataset, batch_size=batch_size, drop_last=drop_last, **kw)
            self._n = len(dataset)

        def _batches(self) -> list[list[int]]:
            g = torch.Generator()
            g.manual_seed(self.seed + int(getattr(self, "epoch", 0)))
            order = torch.randperm(self._n, generator=g).tolist()
            out = relevance_aware_batches(examples, self.batch_size, order)
            if self.drop_last:
                out = [b for b in out if len(b) == self.batch_size]
            return out

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from self._batches()

        def __len__(self) -> int:
            return len(self._batches())

    return _RelevanceAwareBatchSampler


@dataclass
class EncoderTrainResult:
    """What :func:`train_encoder` returns.

    Args:
        model: The trained ``SentenceTransformer``.
        output_dir: Where it was saved.
        train_loss: Mean training loss reported by the trainer.
        steps: Optimizer steps taken.
    """

    model: Any
    output_dir: str
    train_loss: float
    steps: int


def train_encoder(
    model: Any,
    examples: Sequence[TrainingExample],
    config: TrainEncoderConfig | None = None,
    *,
    device: DeviceLike = "auto",
) -> EncoderTrainResult:
    """Fine-tune a bi-encoder with InfoNCE (τ from the config) on mined examples.

    Args:
        model: A ``SentenceTransformer`` or its hub id / path.
        examples: From :func:`~zjulab.skillrouter.mining.mine_hard_negatives`.
        config: Training settings (``lora=True`` trains a peft adapter).
        device: Where to train (accelerate picks GPUs under ``accelerate launch``).

    Returns:
        The trained model, saved under ``config.output_dir``.

    Raises:
        EmptyPoolError: No examples.
    """
    import tempfile

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from zjulab.skillrouter.outputs import check_model_dir, save_model_dir

    cfg = config or TrainEncoderConfig()
    check_model_dir(cfg.output_dir, cfg.overwrite)  # before minutes of training, not after
    sentence_transformer, mnrl = _st_classes()
    dataset = build_encoder_dataset(examples, cfg)
    if not isinstance(model, sentence_transformer):
        model = sentence_transformer(str(model), device=str(resolve_device(device)))
    else:
        model = model.to(resolve_device(device))
    if cfg.lora:
        from peft import LoraConfig, TaskType

        model.add_adapter(
            LoraConfig(
                task_type=TaskType.FEATURE_EXTRACTION,
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                target_modules="all-linear",
            )
        )
    loss = mnrl(model, scale=1.0 / cfg.temperature)
    scratch = tempfile.TemporaryDirectory(prefix="zjulab-skillrouter-train-")
    args = SentenceTransformerTrainingArguments(
        output_dir=scratch.name,  # the trainer's own files never touch the user's folder
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        **warmup_kwargs(SentenceTransformerTrainingArguments, cfg.warmup_ratio),
        weight_decay=cfg.weight_decay,
        bf16=cfg.bf16,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=resolve_device(device).type == "cpu",
        disable_tqdm=not cfg.show_progress,
        batch_sampler=_sampler_factory(examples),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    before = batch_conflicts(
        examples,
        [
            list(range(i, min(i + cfg.batch_size, len(examples))))
            for i in range(0, len(examples), cfg.batch_size)
        ],
    )
    logger.info(
        "in-batch false negatives: %d with sequential batches, 0 with the relevance-aware sampler", before
    )
    try:
        out = trainer.train()
    finally:
        scratch.cleanup()
    save_model_dir(cfg.output_dir, lambda tmp: model.save(str(tmp)), cfg.overwrite)
    logger.info(
        "trained the encoder for %d steps (loss %.4f) -> %s",
        out.global_step,
        out.training_loss,
        cfg.output_dir,
    )
    return EncoderTrainResult(model, cfg.output_dir, float(out.training_loss), int(out.global_step))
