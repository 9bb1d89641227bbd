r"""Training recipe: supervised fine-tuning on the curated conversations with TRL, peft and accelerate.

The recipe is TRL's ``SFTTrainer`` on a ``messages`` dataset (see
:func:`~zjulab.conifer.curriculum.to_dataset`), with a LoRA adapter by default and the
training sampler set to *sequential*, so the curriculum order of the rows is the order the
model sees them (TRL otherwise shuffles). Multi-GPU runs go through accelerate::

    accelerate launch -m zjulab.conifer.cli train --data conifer_sft --model Qwen/Qwen2.5-7B \\
        --output-dir out

(or call :func:`sft_trainer` from your own script and launch that with ``accelerate launch``).
DPO on the same data is a matter of building pairs (an external-feedback conversation gives
the revised answer as *chosen* and the weak answer as *rejected*) and using TRL's
``DPOTrainer`` with the same peft configuration.
"""

from __future__ import annotations

import logging
from typing import Any

from zjulab.common.device import DeviceLike, resolve_device

__all__ = ["dpo_pairs", "sft_trainer"]

logger = logging.getLogger(__name__)


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
    curriculum: bool = True,
    device: DeviceLike = "auto",
    **sft_kwargs: Any,
) -> Any:
    """Build a TRL ``SFTTrainer`` for the curated conversations (call ``.train()`` on it).

    Defaults follow common 7B instruction-tuning practice (the paper trains Mistral-7B with
    full fine-tuning at 2e-5 for 3 epochs); LoRA keeps the recipe runnable on one GPU.

    Args:
        dataset: A ``datasets.Dataset`` with a ``messages`` column.
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
        max_length: Tokens kept per conversation (``None``: no truncation).
        curriculum: Keep the dataset order (sequential sampler); ``False`` shuffles.
        device: ``"cpu"`` forces CPU training; anything else lets accelerate place the model.
        **sft_kwargs: Further ``trl.SFTConfig`` fields.

    Returns:
        The ``SFTTrainer``.

    Raises:
        ImportError: TRL is not installed (``pip install 'zjulab-conifer[train]'``).
    """
    try:
        from trl import SFTConfig, SFTTrainer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the training recipe needs TRL: pip install 'zjulab-conifer[train]'") from exc
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
            target_modules="all-linear",
        )
    use_cpu = resolve_device(device).type == "cpu"
    args = SFTConfig(
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
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def dpo_pairs(conversations: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Preference pairs from external-feedback conversations (TRL's conversational DPO format).

    Each four-turn conversation ``[user, weak answer, critique, revision]`` gives
    ``{"prompt": [user], "chosen": [revision], "rejected": [weak answer]}``; other
    conversations are skipped.
    """
    out = []
    for conv in conversations:
        if len(conv) == 4 and [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]:
            out.append(
                {
                    "prompt": [dict(conv[0])],
                    "chosen": [{"role": "assistant", "content": conv[3]["content"]}],
                    "rejected": [{"role": "assistant", "content": conv[1]["content"]}],
                }
            )
    return out
