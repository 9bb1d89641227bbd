"""The optimisation loop every trainer shares."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zjulab.common.device import resolve_device
from zjulab.common.seeding import seed_everything
from zjulab.crs.config import TrainConfig
from zjulab.crs.errors import DataFormatError

__all__ = ["TrainHistory", "module_device", "seeded_init", "train_loop"]

logger = logging.getLogger(__name__)


@dataclass
class TrainHistory:
    """What a training run did.

    Attributes:
        losses: Loss of every step.
        examples: Samples seen.
        seconds: Wall time of the loop.
    """

    losses: list[float] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        """Optimiser steps taken."""
        return len(self.losses)

    @property
    def examples_per_second(self) -> float:
        """Training throughput."""
        return self.examples / self.seconds if self.seconds > 0 else 0.0

    def mean_loss(self, first: bool, n: int = 3) -> float:
        """Mean of the first (or last) ``n`` step losses."""
        part = self.losses[:n] if first else self.losses[-n:]
        return sum(part) / len(part) if part else float("nan")


def _index_batches(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def train_loop(
    module: nn.Module,
    samples: Sequence[Any],
    loss_fn: Callable[[list[Any]], torch.Tensor],
    config: TrainConfig,
    *,
    head_params: Sequence[nn.Parameter] = (),
    desc: str = "train",
) -> TrainHistory:
    """Train ``module`` on ``samples`` with AdamW.

    Args:
        module: The model (its parameters not in ``head_params`` use ``learning_rate``).
        samples: Training samples; ``loss_fn`` gets a list of them per step.
        loss_fn: Computes the mean loss of a batch (moving tensors to the module's device).
        config: Steps, epochs, batch size, rates, clipping, seed, accelerate switch.
        head_params: Parameters trained with ``head_learning_rate``.
        desc: Name used in log lines.

    Returns:
        The :class:`TrainHistory`.

    Raises:
        DataFormatError: ``samples`` is empty.
    """
    if not samples:
        raise DataFormatError(f"{desc}: no training samples")
    seed_everything(config.seed)
    rng = random.Random(config.seed)
    head_ids = {id(p) for p in head_params}
    base = [p for p in module.parameters() if p.requires_grad and id(p) not in head_ids]
    heads = [p for p in head_params if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": base, "lr": config.learning_rate}]
    if heads:
        groups.append({"params": heads, "lr": config.head_learning_rate})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    accelerator = None
    if config.use_accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator()
        module, opt = accelerator.prepare(module, opt)
    per_epoch = math.ceil(len(samples) / config.batch_size)
    total = config.max_steps or per_epoch * config.epochs  # max_steps overrides epochs
    history = TrainHistory()
    module.train()
    start = time.perf_counter()
    step = 0
    try:
        while step < total:
            for idx in _index_batches(len(samples), config.batch_size, rng):
                if step >= total:
                    break
                batch = [samples[i] for i in idx]
                loss = loss_fn(batch)
                opt.zero_grad(set_to_none=True)
                if accelerator is not None:
                    accelerator.backward(loss)
                else:
                    loss.backward()
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_([*base, *heads], config.max_grad_norm)
                opt.step()
                history.losses.append(float(loss.detach()))
                history.examples += len(batch)
                step += 1
                if step % config.log_every == 0:
                    logger.info(
                        "%s step %d/%d loss %.4f",
                        desc,
                        step,
                        total,
                        history.mean_loss(False, config.log_every),
                    )
    finally:
        module.eval()
        history.seconds = time.perf_counter() - start
    logger.info("%s: %d steps, %.1f samples/s", desc, history.steps, history.examples_per_second)
    return history


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Draw the weights built inside from ``seed``, leaving the global RNG as it was.

    The heads a model adds to its backbone (BiLSTM, CRF, linear layers, LoRA matrices) are
    built under it, so one config gives one initial model in every process, whatever drew
    from the global generator before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU for a parameterless one)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else resolve_device("cpu")
