"""Optional dependencies: import them on first use, or fail with the exact install line.

The torch-free core of every library imports nothing heavy at import time. A feature that needs
an extra calls :func:`require` where it starts::

    torch = require("torch", "pip install 'zjulab-hiesql[torch]'", feature="HieSqlParser")

and a missing package becomes a :class:`~zjulab.common.errors.MissingDependencyError` naming that
line, never a bare ``ModuleNotFoundError`` from deep inside a call.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from zjulab.common.errors import MissingDependencyError

__all__ = ["TORCH_EXTRA", "available", "require"]

#: The install line of zjulab-common's own torch extra.
TORCH_EXTRA = "pip install 'zjulab-common[torch]'"


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, install: str = TORCH_EXTRA, *, feature: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``install``.

    Args:
        module: Import name (``"torch"``, ``"transformers"``, ``"opentelemetry.sdk.trace"``).
        install: The command that installs it, shown to the user verbatim.
        feature: What needed it, for the message (``"TransformersChatModel"``).
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only a missing *top-level* package of ours is the user's missing extra; a module
        # missing inside an installed package is a real bug and keeps its traceback.
        missing = (exc.name or "").split(".")[0]
        if missing and missing == module.split(".")[0]:
            raise MissingDependencyError(module, install, feature) from exc
        raise
