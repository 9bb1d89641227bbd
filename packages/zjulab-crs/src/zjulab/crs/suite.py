"""Train and evaluate every task on one corpus: baseline vs. trained model (vs. an LLM).

This is what ``zjulab-crs demo`` and the benchmark run. Each trained model gets a fresh copy of
the backbone from a factory, trains for a few steps, and is scored on the test split with the
same metric bundle as its baseline; training and inference throughput are recorded.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.common.deps import available
from zjulab.common.protocols import ChatModel, TextEncoder
from zjulab.crs.config import (
    ElicitationConfig,
    GeneratorConfig,
    QualityConfig,
    RankerConfig,
    SASRecConfig,
    TaggerConfig,
)
from zjulab.crs.elicitation import AttributeClassifier, FrequencyElicitor
from zjulab.crs.errors import CrsConfigError, DataFormatError
from zjulab.crs.generation import ResponseGenerator, RetrievalResponder
from zjulab.crs.llm import LLMElicitor, LLMResponder, LLMUnderstanding
from zjulab.crs.loaders import UNeedCorpus
from zjulab.crs.quality import QualityRegressor, Ruber, RuberScorer
from zjulab.crs.recommendation import AttributeMatchRanker, BiEncoderRanker
from zjulab.crs.report import HEADLINE, PAPER_BASELINES, evaluate_by_category, format_table
from zjulab.crs.samples import TASKS, build_task_samples
from zjulab.crs.sequential import SASREC_EXTRA, SASRecRanker
from zjulab.crs.tagger import LexiconTagger, SpanTagger

__all__ = [
    "SuiteConfig",
    "TaskResult",
    "category_table",
    "embedded_factories",
    "five_task_table",
    "run_suite",
    "tiny_factories",
]

logger = logging.getLogger(__name__)

Factory = Callable[[], tuple[Any, Any]]


@dataclass
class SuiteConfig:
    """How long and on what each task trains in :func:`run_suite`.

    Args:
        tasks: Tasks to run, in order.
        steps: Optimiser steps per trained model (a few for a demo; ``0`` means ``epochs``).
        epochs: Passes over the training split when ``steps`` is 0.
        batch_size: Samples per step of the encoder models.
        generator_batch_size: Samples per step of the causal LM.
        max_length: Token limit of encoder inputs.
        learning_rate: Backbone learning rate.
        head_learning_rate: Learning rate of the new layers (LSTM, CRF, heads).
        generator_learning_rate: Causal-LM (LoRA) learning rate.
        use_lora: Fine-tune the generator with LoRA.
        max_eval: Test samples per task (``0``: all); generation is the slow one on CPU.
        max_new_tokens: Generation length.
        device: Device for every model.
        seed: Seed.
        sasrec: Add the SASRec baseline of task 3 (hopwise; ``None``: when hopwise is
            installed, and a log line says so when it is not).
        sasrec_epochs: SASRec's training epochs.
    """

    tasks: tuple[str, ...] = TASKS
    steps: int = 30  # a demo-sized run; real runs use epochs
    epochs: int = 3
    batch_size: int = 16  # fits CPU RAM with MiniLM at max_length 96
    generator_batch_size: int = 4  # SmolLM2-135M steps stay under a second on 2 cores
    max_length: int = 96  # synthetic turns are short
    learning_rate: float = 1e-4  # a few steps need a larger rate than a full fine-tune
    head_learning_rate: float = 1e-3  # new layers start random
    generator_learning_rate: float = 1e-3  # LoRA tolerates large rates
    use_lora: bool = True
    max_eval: int = 0
    max_new_tokens: int = 24  # synthetic responses are about a dozen words
    device: str = "auto"
    seed: int = 0
    sasrec: bool | None = None
    sasrec_epochs: int = 50  # SASRecConfig's default

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise CrsConfigError(f"unknown task(s) {unknown}; expected some of {list(TASKS)}")
        if self.sasrec_epochs < 1:
            raise CrsConfigError(f"sasrec_epochs must be >= 1, got {self.sasrec_epochs}")
        if self.steps < 0 or self.epochs < 1 or self.batch_size < 1 or self.generator_batch_size < 1:
            raise CrsConfigError("steps >= 0, epochs >= 1 and batch sizes >= 1 are required")
        if self.max_eval < 0:
            raise CrsConfigError(f"max_eval must be >= 0, got {self.max_eval}")

    @classmethod
    def tiny(cls, **overrides: Any) -> SuiteConfig:
        """Settings for the tiny random models of :func:`tiny_factories`.

        They train from scratch: 40 steps, larger learning rates, no LoRA, short inputs.
        """
        settings: dict[str, Any] = {
            "steps": 40,
            "learning_rate": 1e-3,
            "head_learning_rate": 1e-2,
            "generator_learning_rate": 1e-2,
            "use_lora": False,
            "max_length": 64,
            "batch_size": 16,
            "generator_batch_size": 8,
            "max_eval": 64,
        }
        return cls(**{**settings, **overrides})


def tiny_factories() -> tuple[Factory, Factory]:
    """Backbone factories of tiny random models (``zjulab.common.testing``): encoder, causal LM.

    Each encoder call gets a new seed, so the trained models do not share initial weights.
    """
    from zjulab.common.testing import tiny_causal_lm, tiny_encoder

    seeds = itertools.count()
    return (lambda: tiny_encoder(next(seeds), hidden_size=64)), (lambda: tiny_causal_lm(0, hidden_size=64))


def embedded_factories(device: str) -> tuple[Factory, Factory]:
    """Backbone factories of the embedded models: MiniLM-L6 (a fresh copy per call), SmolLM2-135M."""
    from zjulab.common.defaults import default_chat_model_path, default_encoder_path
    from zjulab.crs.backbone import load_backbone

    enc, tok = load_backbone(str(default_encoder_path()), device=device)
    lm_path = str(default_chat_model_path())
    return (lambda: (copy.deepcopy(enc), tok)), (lambda: load_backbone(lm_path, kind="causal", device=device))


@dataclass
class TaskResult:
    """One system's result on one task.

    Attributes:
        task: Task name.
        system: System name.
        kind: ``"baseline"``, ``"trained"`` or ``"llm"``.
        metrics: Metrics on the whole test split.
        by_category: Metrics per category (and ``"all"``).
        train_seconds: Training wall time (0 for baselines).
        train_examples_per_s: Training throughput.
        infer_examples_per_s: Prediction throughput on the test split.
        first_loss: Mean loss of the first steps (trained models).
        last_loss: Mean loss of the last steps (trained models).
        n_train: Training samples.
        n_test: Test samples.
    """

    task: str
    system: str
    kind: str
    metrics: dict[str, float]
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    train_examples_per_s: float = 0.0
    infer_examples_per_s: float = 0.0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    n_train: int = 0
    n_test: int = 0


def _run(
    task: str,
    name: str,
    kind: str,
    system: Any,
    train: Sequence[Any],
    test: Sequence[Any],
    **fit_kwargs: Any,
) -> TaskResult:
    hist = system.fit(train, **fit_kwargs)
    by_cat, seconds = evaluate_by_category(system, task, test)
    res = TaskResult(task, name, kind, by_cat["all"], by_cat, n_train=len(train), n_test=len(test))
    res.infer_examples_per_s = len(test) / seconds if seconds > 0 else 0.0
    if hasattr(hist, "losses"):
        res.train_seconds = hist.seconds
        res.train_examples_per_s = hist.examples_per_second
        res.first_loss = hist.mean_loss(True)
        res.last_loss = hist.mean_loss(False)
    logger.info("%s / %s: %s", task, name, {k: round(v, 4) for k, v in res.metrics.items()})
    return res


def run_suite(
    corpus: UNeedCorpus,
    encoder_factory: Factory,
    causal_factory: Factory | None = None,
    *,
    config: SuiteConfig | None = None,
    text_encoder: TextEncoder | None = None,
    chat_model: ChatModel | None = None,
) -> list[TaskResult]:
    """Train and score baseline and trained systems on every task of ``config.tasks``.

    Args:
        corpus: Data with train and test splits.
        encoder_factory: Returns a fresh ``(encoder, tokenizer)`` for each encoder model.
        causal_factory: Returns ``(causal_lm, tokenizer)`` for the generator (generation is
            skipped without it).
        config: Steps, sizes, device.
        text_encoder: Encoder of the retrieval and RUBER baselines (lexical hashing when None).
        chat_model: Adds the LLM variants of tasks 1, 2 and 4 when given.

    Returns:
        One :class:`TaskResult` per system and task.
    """
    cfg = config or SuiteConfig()
    train = build_task_samples(corpus, "train")
    test = build_task_samples(corpus, "test")
    common: dict[str, Any] = {
        "max_steps": cfg.steps,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "max_length": cfg.max_length,
        "learning_rate": cfg.learning_rate,
        "head_learning_rate": cfg.head_learning_rate,
        "device": cfg.device,
        "seed": cfg.seed,
    }

    def cut(xs: list[Any]) -> list[Any]:
        return xs[: cfg.max_eval] if cfg.max_eval else xs

    results: list[TaskResult] = []
    for task in cfg.tasks:
        tr, te = getattr(train, task), cut(getattr(test, task))
        if not tr or not te:
            logger.warning("%s: no train or test samples; skipped", task)
            continue
        if task == "understanding":
            results.append(_run(task, "lexicon match", "baseline", LexiconTagger(), tr, te))
            m, t = encoder_factory()
            results.append(
                _run(
                    task,
                    "encoder+BiLSTM+CRF",
                    "trained",
                    SpanTagger(TaggerConfig(**common), model=m, tokenizer=t),
                    tr,
                    te,
                )
            )
            if chat_model is not None:
                results.append(
                    _run(task, f"LLM ({chat_model.model_id})", "llm", LLMUnderstanding(chat_model), tr, te)
                )
        elif task == "elicitation":
            results.append(_run(task, "frequency prior", "baseline", FrequencyElicitor(), tr, te))
            m, t = encoder_factory()
            results.append(
                _run(
                    task,
                    "encoder multi-label",
                    "trained",
                    AttributeClassifier(ElicitationConfig(**common), model=m, tokenizer=t),
                    tr,
                    te,
                )
            )
            if chat_model is not None:
                results.append(
                    _run(task, f"LLM ({chat_model.model_id})", "llm", LLMElicitor(chat_model), tr, te)
                )
        elif task == "recommendation":
            results.append(
                _run(
                    task,
                    "popularity",
                    "baseline",
                    AttributeMatchRanker.popularity(corpus.items, corpus.behaviours),
                    tr,
                    te,
                )
            )
            results.append(
                _run(
                    task,
                    "attribute match",
                    "baseline",
                    AttributeMatchRanker(corpus.items, corpus.behaviours),
                    tr,
                    te,
                )
            )
            if cfg.sasrec or (cfg.sasrec is None and available("hopwise")):
                sas = SASRecRanker(
                    corpus.items,
                    corpus.behaviours,
                    SASRecConfig(epochs=cfg.sasrec_epochs, seed=cfg.seed, device=cfg.device),
                )
                try:
                    # the test examples' users contribute nothing from their test time on
                    results.append(_run(task, "SASRec (hopwise)", "baseline", sas, tr, te, exclude=te))
                except DataFormatError as exc:
                    logger.warning("SASRec baseline skipped: %s", exc)
            elif cfg.sasrec is None:
                logger.info("SASRec baseline not run: hopwise is not installed (%s)", SASREC_EXTRA)
            m, t = encoder_factory()
            rcfg = RankerConfig(**{**common, "batch_size": max(1, cfg.batch_size // 2)}, num_negatives=3)
            results.append(
                _run(
                    task,
                    "bi-encoder",
                    "trained",
                    BiEncoderRanker(corpus.items, rcfg, model=m, tokenizer=t),
                    tr,
                    te,
                )
            )
        elif task == "generation":
            results.append(_run(task, "retrieval", "baseline", RetrievalResponder(text_encoder), tr, te))
            if causal_factory is not None:
                m, t = causal_factory()
                gcfg = GeneratorConfig(
                    **{
                        **common,
                        "batch_size": cfg.generator_batch_size,
                        "learning_rate": cfg.generator_learning_rate,
                        "max_length": 2 * cfg.max_length,
                    },
                    use_lora=cfg.use_lora,
                    max_new_tokens=cfg.max_new_tokens,
                    max_turns=2,
                )
                results.append(
                    _run(
                        task,
                        "causal LM" + (" + LoRA" if cfg.use_lora else ""),
                        "trained",
                        ResponseGenerator(gcfg, model=m, tokenizer=t),
                        tr,
                        te,
                    )
                )
            if chat_model is not None:
                results.append(
                    _run(
                        task,
                        f"LLM ({chat_model.model_id})",
                        "llm",
                        LLMResponder(chat_model, max_new_tokens=cfg.max_new_tokens * 2),
                        tr,
                        te,
                    )
                )
        else:
            results.append(_run(task, "RUBER cosine", "baseline", RuberScorer(text_encoder), tr, te))
            results.append(
                _run(
                    task, "RUBER (referenced + trained unreferenced)", "baseline", Ruber(text_encoder), tr, te
                )
            )
            m, t = encoder_factory()
            results.append(
                _run(
                    task,
                    "encoder regression",
                    "trained",
                    QualityRegressor(QualityConfig(**common), model=m, tokenizer=t),
                    tr,
                    te,
                )
            )
    return results


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4f}"


def _also(name: str, r: TaskResult) -> str:
    if name == "all_tied":  # a count of examples, not a rate
        return f"{name} {int(r.metrics[name])} of {r.n_test}"
    return f"{name} {_fmt(r.metrics[name])}"


def five_task_table(results: Sequence[TaskResult], *, with_paper: bool = True) -> str:
    """The summary table: task, system, headline metrics, throughput, loss first -> last."""
    rows = []
    for r in results:
        names = HEADLINE[r.task]
        row: dict[str, Any] = {
            "task": r.task,
            "system": r.system,
            "metric": names[0],
            "value": _fmt(r.metrics.get(names[0], float("nan"))),
            "also": ", ".join(_also(n, r) for n in names[1:] if n in r.metrics),
            "train ex/s": f"{r.train_examples_per_s:.1f}" if r.kind == "trained" else "-",
            "infer ex/s": f"{r.infer_examples_per_s:.1f}",
            "loss": f"{r.first_loss:.3f} -> {r.last_loss:.3f}" if r.kind == "trained" else "-",
        }
        rows.append(row)
    if with_paper:
        for task in dict.fromkeys(r.task for r in results):
            model, metric, value = PAPER_BASELINES[task]
            rows.append(
                {
                    "task": task,
                    "system": f"paper: {model} (U-NEED, other data)",
                    "metric": metric,
                    "value": f"{value:.4f}",
                    "also": "",
                    "train ex/s": "-",
                    "infer ex/s": "-",
                    "loss": "-",
                }
            )
    return format_table(rows)


def verdicts(results: Sequence[TaskResult]) -> list[str]:
    """One plain line per trained model: does it beat its task's best baseline?

    Compared on the task's headline metric (the first of :data:`HEADLINE`).
    """
    lines = []
    for task in dict.fromkeys(r.task for r in results):
        metric = HEADLINE[task][0]
        base = [r for r in results if r.task == task and r.kind == "baseline"]
        trained = [r for r in results if r.task == task and r.kind == "trained"]
        if not base or not trained:
            continue
        b = max(base, key=lambda r: r.metrics.get(metric, float("-inf")))
        for t in trained:
            tv, bv = t.metrics.get(metric, float("nan")), b.metrics.get(metric, float("nan"))
            beats = tv > bv
            word = "beats" if beats else "does NOT beat"
            lines.append(f"{task}: {t.system} {metric} {_fmt(tv)} {word} {b.system} {_fmt(bv)}")
    return lines


def category_table(results: Sequence[TaskResult], task: str) -> str:
    """Per-category table of one task, like the paper's: category, system, headline metrics."""
    rows = []
    names = HEADLINE[task]
    cats = sorted(
        {c for r in results if r.task == task for c in r.by_category}, key=lambda c: (c != "all", c)
    )
    for cat in cats:
        for r in results:
            if r.task == task and cat in r.by_category:
                m = r.by_category[cat]
                rows.append(
                    {"category": cat, "system": r.system, **{n: m.get(n, float("nan")) for n in names}}
                )
    return format_table(rows)
