"""Seed every random number generator a zjulab library touches."""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["seed_everything"]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and, when it is installed, torch (CPU and every CUDA device).

    Args:
        seed: The seed.
        deterministic: Also ask torch for deterministic kernels (slower; raises at run time on
            ops that have no deterministic implementation) and set ``CUBLAS_WORKSPACE_CONFIG``.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:  # a torch-free install has no torch generators to seed
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
