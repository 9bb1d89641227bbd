"""Fine-tuning the second-stage reranker: listwise or pointwise, yes/no LM or cross-encoder.

Each training group is one query with ``G`` documents: its positive first, then ``G - 1``
mined negatives. With scores ``s_0..s_{G-1}`` (``logit(yes) − logit(no)`` for a causal LM,
the relevance logit for a cross-encoder):

* listwise (SkillRouter's choice): ``L = −log softmax(s)_0``, a cross-entropy over the group;
* pointwise: ``L = mean_j BCE(σ(s_j), y_j)`` with ``y_0 = 1`` and ``y_j = 0`` otherwise.

Training runs on the transformers ``Trainer`` (accelerate underneath).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zjulab.common.batching import padding_side
from zjulab.common.deps import require
from zjulab.common.device import DeviceLike, resolve_device
from zjulab.skillrouter.config import TrainRerankerConfig
from zjulab.skillrouter.errors import EmptyPoolError
from zjulab.skillrouter.formatting import format_skill
from zjulab.skillrouter.mining import TrainingExample
from zjulab.skillrouter.profiles import get_profile
from zjulab.skillrouter.trainer_args import warmup_kwargs

torch = require(
    "torch", "pip install 'zjulab-skillrouter[torch]'", feature="zjulab-skillrouter reranker training"
)

__all__ = ["RerankerTrainResult", "group_loss", "reranker_loss", "train_reranker"]

logger = logging.getLogger(__name__)


def group_loss(scores: torch.Tensor, loss: str = "listwise") -> torch.Tensor:
    """Loss of ``[B, G]`` group scores whose column 0 holds the positives.

    Args:
        scores: Relevance scores (logits).
        loss: ``"listwise"`` (softmax cross-entropy) or ``"pointwise"`` (binary cross-entropy).
    """
    if loss == "listwise":
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return torch.nn.functional.cross_entropy(scores, target)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)


def _groups(examples: Sequence[TrainingExample], cfg: TrainRerankerConfig) -> list[dict[str, Any]]:
    if not examples:
        raise EmptyPoolError("no training examples")
    n_neg = min([cfg.group_size - 1, *(len(e.negatives) for e in examples)])
    if n_neg < 1:
        raise EmptyPoolError("every example needs at least one negative for reranker training")

    def fmt(s: Any) -> str:
        return format_skill(s, fields=cfg.fields, desc_max=cfg.desc_max, body_max=cfg.body_max)

    return [
        {"query": e.query, "docs": [fmt(e.positive), *(fmt(n) for n in e.negatives[:n_neg])]}
        for e in examples
    ]


class _Collator:
    """Turns groups into one flat, left-padded batch of ``B·G`` prompts."""

    def __init__(self, tokenizer: Any, cfg: TrainRerankerConfig, scorer: Any) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.scorer = scorer

    def __call__(self, groups: list[dict[str, Any]]) -> dict[str, Any]:
        tok = self.tokenizer
        size = len(groups[0]["docs"])
        queries = [g["query"] for g in groups for _ in g["docs"]]
        docs = [d for g in groups for d in g["docs"]]
        if self.scorer is not None:
            # the answer position is at the end
            with padding_side(tok, "left", truncation="left"):
                enc = tok(
                    [self.scorer.fit_prompt(q, d) for q, d in zip(queries, docs)],
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.max_length,
                    add_special_tokens=False,
                    return_tensors="pt",
                )
        else:
            enc = tok(
                queries,
                docs,
                padding=True,
                truncation="only_second",
                max_length=self.cfg.max_length,
                return_tensors="pt",
            )
        return {**enc, "group_size": torch.tensor(size)}


def _answer_logits(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """``[B, vocab]`` logits at the (left-padded) answer position, the LM head run there only.

    The trainer's own model (possibly wrapped by peft or accelerate) is called, so the scorer's
    inference-time helper is not reused here; a model without ``logits_to_keep`` gets full logits.
    """
    try:
        return model(**inputs, logits_to_keep=1).logits[:, -1, :]
    except TypeError:
        return model(**inputs).logits[:, -1, :]


def _scores(model: Any, batch: dict[str, Any], yes_no: tuple[int, int] | None) -> torch.Tensor:
    size = int(batch["group_size"])
    inputs = {k: v for k, v in batch.items() if k != "group_size"}
    if yes_no is not None:
        last = _answer_logits(model, inputs).float()
        s = last[:, yes_no[0]] - last[:, yes_no[1]]
    else:
        lg = model(**inputs).logits.float()
        s = lg[:, 0] if lg.shape[-1] == 1 else lg[:, 1] - lg[:, 0]
    return s.view(-1, size)


def _setup(model: Any, tokenizer: Any, cfg: TrainRerankerConfig, device: DeviceLike) -> tuple[Any, Any, Any]:
    from zjulab.common.loading import load_causal_lm, load_cross_encoder, load_tokenizer
    from zjulab.skillrouter.scoring import ProfileYesNoScorer

    if isinstance(model, str) or hasattr(model, "__fspath__"):
        loader = load_causal_lm if cfg.kind == "yes_no" else load_cross_encoder
        name = str(model)
        model = loader(name, device=device, dtype="float32")
        tokenizer = tokenizer or load_tokenizer(name)
    if tokenizer is None:
        tokenizer = load_tokenizer(model.config._name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    scorer = None
    if cfg.kind == "yes_no":
        # the very prompt the router's reranker builds for this profile
        scorer = ProfileYesNoScorer(
            model, tokenizer, profile=get_profile(cfg.profile), max_length=cfg.max_length, device=device
        )
    return model, tokenizer, scorer


def reranker_loss(
    model: Any,
    tokenizer: Any,
    examples: Sequence[TrainingExample],
    config: TrainRerankerConfig | None = None,
) -> float:
    """The training loss of ``model`` on ``examples`` as one batch, without gradient."""
    cfg = config or TrainRerankerConfig()
    model, tokenizer, scorer = _setup(model, tokenizer, cfg, next(model.parameters()).device)
    batch = _Collator(tokenizer, cfg, scorer)(_groups(examples, cfg))
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ids = (scorer.yes_id, scorer.no_id) if scorer is not None else None
            return float(group_loss(_scores(model, batch, ids), cfg.loss))
    finally:
        model.train(was_training)


@dataclass
class RerankerTrainResult:
    """What :func:`train_reranker` returns.

    Args:
        model: The trained model (a peft model when ``lora=True``).
        tokenizer: Its tokenizer.
        output_dir: Where both were saved.
        train_loss: Mean training loss reported by the trainer.
        steps: Optimizer steps taken.
    """

    model: Any
    tokenizer: Any
    output_dir: str
    train_loss: float
    steps: int


def train_reranker(
    model: Any,
    examples: Sequence[TrainingExample],
    config: TrainRerankerConfig | None = None,
    *,
    tokenizer: Any = None,
    device: DeviceLike = "auto",
) -> RerankerTrainResult:
    """Fine-tune a reranker on groups of one positive and mined negatives.

    Args:
        model: A causal LM (``kind="yes_no"``) or sequence classifier (``"cross_encoder"``),
            or its hub id / path.
        examples: From :func:`~zjulab.skillrouter.mining.mine_hard_negatives`.
        config: Loss, group size and optimisation settings.
        tokenizer: The model's tokenizer (loaded from the model when omitted).
        device: Where to train.

    Returns:
        The trained model and tokenizer, saved under ``config.output_dir``.

    Raises:
        EmptyPoolError: No examples, or examples without negatives.
    """
    import tempfile

    from transformers import Trainer, TrainingArguments

    from zjulab.skillrouter.outputs import check_model_dir, save_model_dir

    cfg = config or TrainRerankerConfig()
    check_model_dir(cfg.output_dir, cfg.overwrite)  # before training, not after
    dev = resolve_device(device)
    model, tokenizer, scorer = _setup(model, tokenizer, cfg, dev)
    groups = _groups(examples, cfg)
    if cfg.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        task = TaskType.CAUSAL_LM if cfg.kind == "yes_no" else TaskType.SEQ_CLS
        model = get_peft_model(
            model,
            LoraConfig(task_type=task, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear"),
        )
    ids = (scorer.yes_id, scorer.no_id) if scorer is not None else None

    class _GroupTrainer(Trainer):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            loss = group_loss(_scores(model, inputs, ids), cfg.loss)
            return (loss, None) if return_outputs else loss

    scratch = tempfile.TemporaryDirectory(prefix="zjulab-skillrouter-train-")
    args = TrainingArguments(
        output_dir=scratch.name,  # the trainer's own files never touch the user's folder
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        **warmup_kwargs(TrainingArguments, cfg.warmup_ratio),
        bf16=cfg.bf16,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=dev.type == "cpu",
        disable_tqdm=not cfg.show_progress,
    )
    trainer = _GroupTrainer(
        model=model,
        args=args,
        train_dataset=groups,
        data_collator=_Collator(tokenizer, cfg, scorer),  # type: ignore[arg-type]
    )
    try:
        out = trainer.train()
    finally:
        scratch.cleanup()
    model.eval()

    def write(tmp: Any) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    save_model_dir(cfg.output_dir, write, cfg.overwrite)
    logger.info(
        "trained the reranker for %d steps (loss %.4f) -> %s",
        out.global_step,
        out.training_loss,
        cfg.output_dir,
    )
    return RerankerTrainResult(
        model, tokenizer, cfg.output_dir, float(out.training_loss), int(out.global_step)
    )
