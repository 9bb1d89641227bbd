r"""Training recipe: supervised fine-tuning on the curated conversations with TRL, peft and accelerate.

The recipe is TRL's ``SFTTrainer`` on a ``messages`` dataset (see
:func:`~zjulab.conifer.curriculum.to_dataset`), with a LoRA adapter by default and the
training sampler set to *sequential*, so the curriculum order of the rows is the order the
model sees them (TRL otherwise shuffles). Multi-GPU runs go through accelerate::

    accelerate launch -m zjulab.conifer.cli train --data conifer_sft --model Qwen/Qwen2.5-7B \\
        --output-dir out

(or call :func:`sft_trainer` from your own script and launch that with ``accelerate launch``).
DPO on the same data: :func:`dpo_pairs` builds pairs from the records that carry a weak answer
judged as failing with feedback (the strong answer *chosen*, the weak answer *rejected*), and
TRL's ``DPOTrainer`` takes them with the same peft configuration.

Before a trainer sees them, rows are checked against the shapes TRL's data paths read
(:func:`check_sft_rows`, :func:`check_dpo_rows`), and conversations longer than ``max_length``
tokens are split at exchange boundaries instead of losing their hardest levels to truncation
(:func:`fit_conversations`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from zjulab.common.deps import require
from zjulab.conifer.errors import ConiferConfigError, ConiferInputError

__all__ = [
    "FitReport",
    "check_dpo_rows",
    "check_sft_rows",
    "dpo_pairs",
    "dpo_trainer",
    "fit_conversations",
    "sft_trainer",
]

logger = logging.getLogger(__name__)

TRAIN_INSTALL = "pip install 'zjulab-conifer[train]'"
TORCH_INSTALL = "pip install 'zjulab-conifer[torch]'"

_ROLES = ("system", "user", "assistant")


def _check_messages(msgs: Any, where: str, *, want_last: str | None = None) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise ConiferInputError(f"{where}: must be a non-empty list of messages")
    for j, m in enumerate(msgs):
        if (
            not isinstance(m, Mapping)
            or set(m) - {"role", "content"}
            or "role" not in m
            or "content" not in m
        ):
            raise ConiferInputError(f"{where}[{j}]: a message is {{'role', 'content'}}, got {m!r:.80}")
        if m["role"] not in _ROLES:
            raise ConiferInputError(f"{where}[{j}]: role must be one of {_ROLES}, got {m['role']!r}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ConiferInputError(f"{where}[{j}]: content must be a non-empty string")
    if want_last is not None and msgs[-1]["role"] != want_last:
        raise ConiferInputError(f"{where}: must end with a {want_last!r} message, got {msgs[-1]['role']!r}")


def _check_alternation(msgs: list[Mapping[str, Any]], where: str) -> None:
    turns = [m["role"] for m in msgs if m["role"] != "system"]
    if any(m["role"] == "system" for m in msgs[1:]):
        raise ConiferInputError(f"{where}: a system message may only come first")
    for j, role in enumerate(turns):
        want = "user" if j % 2 == 0 else "assistant"
        if role != want:
            raise ConiferInputError(f"{where}: turn {j + 1} should be {want!r}, got {role!r}")


def check_sft_rows(rows: Iterable[Mapping[str, Any]]) -> int:
    """Check rows against TRL's conversational SFT format; returns how many were checked.

    A row is ``{"messages": [...]}``: an optional system message, then user and assistant
    turns alternating, starting with user and ending with assistant, every content a
    non-empty string.

    Raises:
        ConiferInputError: The first bad row, by index and field.
    """
    n = 0
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "messages" not in row:
            raise ConiferInputError(f"SFT row {i}: needs a 'messages' field")
        _check_messages(row["messages"], f"SFT row {i}: messages", want_last="assistant")
        _check_alternation(list(row["messages"]), f"SFT row {i}")
        n += 1
    return n


def check_dpo_rows(rows: Iterable[Mapping[str, Any]]) -> int:
    """Check rows against TRL's conversational preference format; returns how many were checked.

    A row is ``{"prompt": [... user], "chosen": [assistant], "rejected": [assistant]}`` with
    different chosen and rejected answers.

    Raises:
        ConiferInputError: The first bad row, by index and field.
    """
    n = 0
    for i, row in enumerate(rows):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row, Mapping) or key not in row:
                raise ConiferInputError(f"DPO row {i}: needs a {key!r} field")
        _check_messages(row["prompt"], f"DPO row {i}: prompt", want_last="user")
        _check_alternation(list(row["prompt"]), f"DPO row {i}: prompt")
        for key in ("chosen", "rejected"):
            _check_messages(row[key], f"DPO row {i}: {key}", want_last="assistant")
            if len(row[key]) != 1:
                raise ConiferInputError(f"DPO row {i}: {key} must be one assistant message")
        if row["chosen"][0]["content"].strip() == row["rejected"][0]["content"].strip():
            raise ConiferInputError(f"DPO row {i}: chosen and rejected are the same answer")
        n += 1
    return n


def dpo_pairs(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Preference pairs (TRL's conversational DPO format) from external-feedback records.

    Only records that carry a weak answer, judged as *not* following the instruction, with
    feedback, make a pair: ``{"prompt": [user instruction], "chosen": [strong answer],
    "rejected": [weak answer]}``. Records are recognised by these fields, never by the shape of
    a conversation (a two-level easy-to-hard conversation also has four turns).

    Args:
        records: Curated records (the pipeline's last stage, or the authors' stage files
            normalised by :func:`~zjulab.conifer.curriculum.normalize_record`).

    Raises:
        ConiferInputError: Given conversations (lists of messages) instead of records.
    """
    from zjulab.conifer.curriculum import normalize_record

    out = []
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ConiferInputError(
                f"dpo_pairs: item {i} is a {type(r).__name__}; pass curated records (dicts with "
                "'instruction', 'answer', 'weak_answer', 'follows', 'feedback'), not conversations"
            )
        for key in ("weak_answer", "feedback"):
            if r.get(key) is not None and not isinstance(r[key], str):
                raise ConiferInputError(
                    f"dpo_pairs: record {i}: {key!r} must be a string, got {type(r[key]).__name__} {r[key]!r:.80}"
                )
        if r.get("follows") is not None and not isinstance(r["follows"], bool):
            raise ConiferInputError(
                f"dpo_pairs: record {i}: 'follows' must be true or false, got {r['follows']!r}"
            )
        if r.get("follows", True) is not False or not r.get("feedback") or not r.get("weak_answer"):
            continue
        if not r.get("answer"):
            continue
        n = normalize_record(r, index=i)
        if str(r["weak_answer"]).strip() == n["answer"].strip():
            continue
        out.append(
            {
                "prompt": [{"role": "user", "content": n["instruction"]}],
                "chosen": [{"role": "assistant", "content": n["answer"]}],
                "rejected": [{"role": "assistant", "content": str(r["weak_answer"])}],
            }
        )
    check_dpo_rows(out)
    return out


@dataclass
class FitReport:
    """What :func:`fit_conversations` did.

    Attributes:
        max_length: The token budget.
        kept: Conversations that fitted as they were.
        split: Conversations split into several rows.
        pieces: Rows made from the split conversations.
        truncated: Rows still over budget (a single exchange longer than ``max_length``);
            the trainer truncates them (they are listed with their index and length).
        longest: Longest conversation before fitting, in tokens.
    """

    max_length: int
    kept: int = 0
    split: int = 0
    pieces: int = 0
    truncated: list[tuple[int, int]] = field(default_factory=list)
    longest: int = 0


def _n_tokens(tokenizer: Any, conv: Sequence[Mapping[str, str]]) -> int:
    ids = tokenizer.apply_chat_template([dict(m) for m in conv], tokenize=True)
    if isinstance(ids, Mapping) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def fit_conversations(
    conversations: Sequence[Sequence[Mapping[str, str]]],
    tokenizer: Any,
    max_length: int,
    *,
    overflow: Literal["split", "error", "truncate"] = "split",
) -> tuple[list[list[dict[str, str]]], FitReport]:
    """Make every conversation fit ``max_length`` tokens without silently losing levels.

    With ``overflow="split"`` a conversation over budget is cut at exchange (user+assistant)
    boundaries into consecutive rows that each fit, in order, so the hardest levels of a long
    easy-to-hard conversation are trained on instead of cut off; a leading system message is
    repeated in each row. ``"error"`` refuses over-long conversations; ``"truncate"`` keeps them
    (the trainer then drops their last tokens) and reports them.

    Raises:
        ConiferInputError: With ``overflow="error"``, a conversation over budget (its index and
            length are named).
        ConiferConfigError: Unknown ``overflow`` or a non-positive ``max_length``.
    """
    if overflow not in ("split", "error", "truncate"):
        raise ConiferConfigError(f"overflow must be 'split', 'error' or 'truncate', got {overflow!r}")
    if max_length <= 0:
        raise ConiferConfigError(f"max_length must be positive, got {max_length}")
    report = FitReport(max_length)
    out: list[list[dict[str, str]]] = []
    for i, conv in enumerate(conversations):
        conv = [dict(m) for m in conv]
        n = _n_tokens(tokenizer, conv)
        report.longest = max(report.longest, n)
        if n <= max_length:
            report.kept += 1
            out.append(conv)
            continue
        if overflow == "error":
            raise ConiferInputError(f"conversation {i}: {n} tokens > max_length={max_length}")
        if overflow == "truncate":
            report.truncated.append((len(out), n))
            out.append(conv)
            continue
        system = conv[:1] if conv and conv[0]["role"] == "system" else []
        body = conv[len(system) :]
        exchanges = [body[j : j + 2] for j in range(0, len(body), 2)]
        pieces: list[list[dict[str, str]]] = []
        current: list[dict[str, str]] = []
        for ex in exchanges:
            trial = [*system, *current, *ex]
            if current and _n_tokens(tokenizer, trial) > max_length:
                pieces.append([*system, *current])
                current = list(ex)
            else:
                current += ex
        if current:
            pieces.append([*system, *current])
        for piece in pieces:
            length = _n_tokens(tokenizer, piece)
            if length > max_length:
                report.truncated.append((len(out), length))
            out.append(piece)
        report.split += 1
        report.pieces += len(pieces)
    if report.split or report.truncated:
        logger.warning(
            "fit to %d tokens: %d conversation(s) split into %d rows; %d row(s) still longer (truncated)",
            max_length,
            report.split,
            report.pieces,
            len(report.truncated),
        )
    return out, report


def sft_trainer(
    dataset: Any,
    model: Any,
    output_dir: str,
    *,
    tokenizer: Any = None,
    lora: bool = True,
    lora_r: int = 16,
    lora_alpha: int = 32,
    learning_rate: float = 2e-5,
    num_train_epochs: float = 3.0,
    max_steps: int = -1,
    per_device_train_batch_size: int = 1,
    gradient_accumulation_steps: int = 8,
    max_length: int | None = 2048,
    overflow: Literal["split", "error", "truncate"] = "split",
    curriculum: bool = True,
    device: str = "auto",
    **sft_kwargs: Any,
) -> Any:
    """Build a TRL ``SFTTrainer`` for the curated conversations (call ``.train()`` on it).

    Defaults follow common 7B instruction-tuning practice (the paper trains Mistral-7B with
    full fine-tuning at 2e-5 for 3 epochs); LoRA keeps the recipe runnable on one GPU. The
    rows are checked (:func:`check_sft_rows`) and fitted to ``max_length``
    (:func:`fit_conversations`; the report is ``trainer.conifer_fit_report``).

    Args:
        dataset: A ``datasets.Dataset`` with a ``messages`` column, or a list of such rows.
        model: Hub id, local path or a loaded ``PreTrainedModel``.
        output_dir: Checkpoints and the adapter go here.
        tokenizer: Tokenizer with a chat template (default: the model's).
        lora: Train a LoRA adapter (peft) instead of every weight.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling.
        learning_rate: Peak learning rate.
        num_train_epochs: Passes over the data.
        max_steps: Stop after this many optimiser steps (``-1``: use epochs).
        per_device_train_batch_size: Conversations per device per step.
        gradient_accumulation_steps: Steps accumulated before an update.
        max_length: Tokens per row (``None``: no limit, no fitting).
        overflow: What to do with longer conversations (see :func:`fit_conversations`).
        curriculum: Keep the dataset order (sequential sampler); ``False`` shuffles.
        device: ``"cpu"`` forces CPU training; anything else lets accelerate place the model.
        **sft_kwargs: Further ``trl.SFTConfig`` fields.

    Returns:
        The ``SFTTrainer``.

    Raises:
        MissingDependencyError: TRL, torch or peft is not installed.
        ConiferInputError: A row is not in TRL's conversational format.
    """
    require("torch", TORCH_INSTALL, feature="the SFT recipe")
    trl = require("trl", TRAIN_INSTALL, feature="the SFT recipe")
    datasets = require("datasets", TRAIN_INSTALL, feature="the SFT recipe")
    from zjulab.common.device import resolve_device

    rows = [dict(r) for r in dataset]
    check_sft_rows(rows)
    if tokenizer is None:
        from transformers import AutoTokenizer

        src = model if isinstance(model, str) else model.config._name_or_path
        tokenizer = AutoTokenizer.from_pretrained(src)
    report = None
    if max_length is not None:
        convs, report = fit_conversations(
            [r["messages"] for r in rows], tokenizer, max_length, overflow=overflow
        )
        rows = [{"messages": c} for c in convs]
    train = datasets.Dataset.from_list(rows)
    peft_config = None
    if lora:
        peft = require("peft", TORCH_INSTALL, feature="LoRA training")
        peft_config = peft.LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
            target_modules="all-linear",
        )
    use_cpu = resolve_device(device).type == "cpu"
    args = trl.SFTConfig(
        output_dir=output_dir,
        learning_rate=learning_rate,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_length=max_length,
        train_sampling_strategy="sequential" if curriculum else "random",
        use_cpu=use_cpu,
        report_to=sft_kwargs.pop("report_to", "none"),
        **sft_kwargs,
    )
    logger.info("SFT recipe: lora=%s, curriculum=%s, cpu=%s", lora, curriculum, use_cpu)
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.conifer_fit_report = report
    return trainer


def dpo_trainer(
    dataset: Any,
    model: Any,
    output_dir: str,
    *,
    tokenizer: Any = None,
    ref_model: Any = None,
    lora: bool = True,
    lora_r: int = 16,
    lora_alpha: int = 32,
    learning_rate: float = 5e-7,
    beta: float = 0.1,
    num_train_epochs: float = 1.0,
    max_steps: int = -1,
    per_device_train_batch_size: int = 1,
    gradient_accumulation_steps: int = 8,
    max_length: int | None = 2048,
    device: str = "auto",
    **dpo_kwargs: Any,
) -> Any:
    """Build a TRL ``DPOTrainer`` on :func:`dpo_pairs` rows (call ``.train()`` on it).

    The paper's DPO stage starts from the SFT model; pass it as ``model``. With LoRA the frozen
    base serves as the reference model; without it, ``ref_model`` (default: a copy TRL makes).

    Raises:
        MissingDependencyError: TRL, torch or peft is not installed.
        ConiferInputError: A row is not a preference pair in TRL's conversational format.
    """
    require("torch", TORCH_INSTALL, feature="the DPO recipe")
    trl = require("trl", TRAIN_INSTALL, feature="the DPO recipe")
    datasets = require("datasets", TRAIN_INSTALL, feature="the DPO recipe")
    from zjulab.common.device import resolve_device

    rows = [dict(r) for r in dataset]
    check_dpo_rows(rows)
    if tokenizer is None:
        from transformers import AutoTokenizer

        src = model if isinstance(model, str) else model.config._name_or_path
        tokenizer = AutoTokenizer.from_pretrained(src)
    peft_config = None
    if lora:
        peft = require("peft", TORCH_INSTALL, feature="LoRA training")
        peft_config = peft.LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
            target_modules="all-linear",
        )
    args = trl.DPOConfig(
        output_dir=output_dir,
        learning_rate=learning_rate,
        beta=beta,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_length=max_length,
        use_cpu=resolve_device(device).type == "cpu",
        report_to=dpo_kwargs.pop("report_to", "none"),
        **dpo_kwargs,
    )
    return trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
