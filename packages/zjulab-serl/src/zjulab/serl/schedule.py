r"""The weights of the Actor and Judge losses over training.

SERL's loss is ``alpha * L_actor + beta * L_judge``. The paper's schedule starts with the Judge
alone and brings the Actor in as training progresses::

    alpha = min(epoch / num_epochs, alpha_cap)        (alpha_cap = 0.5)
    beta  = max(1 - alpha, beta_floor)                (beta_floor = 0.5)

``epoch`` is fractional (TRL's ``state.epoch``), so alpha grows linearly from 0 to 0.5 over the
first half of training and both weights are 0.5 afterwards.
"""

from __future__ import annotations

import math
from typing import Literal

from zjulab.serl.errors import SERLConfigError

__all__ = ["loss_weights"]


def loss_weights(
    epoch: float,
    num_epochs: float,
    *,
    schedule: Literal["serl", "constant"] = "serl",
    alpha_cap: float = 0.5,
    beta_floor: float = 0.5,
    constant: tuple[float, float] = (1.0, 1.0),
) -> tuple[float, float]:
    """``(alpha, beta)``, the weights of the Actor and Judge losses at ``epoch``.

    Args:
        epoch: Training progress in epochs (fractional).
        num_epochs: Planned epochs (> 0).
        schedule: ``"serl"`` (formula in the module docstring) or ``"constant"``.
        alpha_cap: Largest Actor weight of the SERL schedule.
        beta_floor: Smallest Judge weight of the SERL schedule.
        constant: ``(alpha, beta)`` of the constant schedule.

    Raises:
        SERLConfigError: Negative or non-finite progress, ``num_epochs <= 0``, an unknown schedule.
    """
    if schedule == "constant":
        return float(constant[0]), float(constant[1])
    if schedule != "serl":
        raise SERLConfigError(f"schedule must be 'serl' or 'constant', got {schedule!r}")
    if not (math.isfinite(num_epochs) and num_epochs > 0):
        raise SERLConfigError(f"num_epochs must be positive, got {num_epochs!r}")
    if not (math.isfinite(epoch) and epoch >= 0):
        raise SERLConfigError(f"epoch must be a non-negative number, got {epoch!r}")
    alpha = min(epoch / num_epochs, alpha_cap)
    beta = max(1.0 - alpha, beta_floor)
    return float(alpha), float(beta)
