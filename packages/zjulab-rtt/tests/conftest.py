"""Shared helpers of the zjulab-rtt tests: a fixed-rollout GRPO setup on the tiny model."""

from __future__ import annotations

import copy
from typing import Any

import pytest


def _make_args(tmp_path: Any, *, batch: int, generations: int, **extra: Any) -> Any:
    from trl import GRPOConfig

    extra.setdefault("max_completion_length", 8)
    return GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        num_generations=generations,
        max_steps=1,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
        gradient_checkpointing=False,
        **extra,
    )


def _fixed_rollout(tok: Any, completions: list[str]) -> Any:
    """A TRL ``rollout_func`` returning the given completions in order (cycled)."""

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        prompt_ids = [tok(p if isinstance(p, str) else p[-1]["content"])["input_ids"] for p in prompts]
        comp = [
            tok(completions[i % len(completions)], add_special_tokens=False)["input_ids"]
            for i in range(len(prompts))
        ]
        return {"prompt_ids": prompt_ids, "completion_ids": comp, "logprobs": None}

    return rollout


@pytest.fixture()
def fresh_tiny() -> tuple[Any, Any]:
    """A fresh (trainable) tiny causal LM and its tokenizer."""
    from zjulab.common.testing import tiny_causal_lm

    return tiny_causal_lm(0)


@pytest.fixture()
def clone() -> Any:
    return copy.deepcopy


@pytest.fixture()
def make_args() -> Any:
    """Factory: ``make_args(path, batch=, generations=, **GRPOConfig fields)``."""
    return _make_args


@pytest.fixture()
def fixed_rollout() -> Any:
    """Factory: ``fixed_rollout(tokenizer, completions)`` -> a TRL ``rollout_func``."""
    return _fixed_rollout
