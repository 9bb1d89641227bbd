"""torch for the neural parser and pretraining, or a typed error naming the extra that installs it."""

from __future__ import annotations

from zjulab.common.deps import require

INSTALL = "pip install 'zjulab-hiesql[torch]'"

torch = require("torch", INSTALL, feature="the HIE-SQL neural parser and pretraining")
require("transformers", INSTALL, feature="the HIE-SQL neural parser and pretraining")
nn = torch.nn

__all__ = ["INSTALL", "nn", "torch"]
