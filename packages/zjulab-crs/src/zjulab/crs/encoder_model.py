"""The base of the trainable encoder models: construction, checkpoint save and load.

:class:`~zjulab.crs.tagger.SpanTagger`, :class:`~zjulab.crs.elicitation.AttributeClassifier`
and :class:`~zjulab.crs.quality.QualityRegressor` are an encoder plus task layers (``net``
with an ``encoder`` attribute). They share how the backbone is chosen and how a checkpoint is
written (the encoder with ``save_pretrained``, the other layers as a state dict, the label
vocabulary or score scaling in the metadata) and read back.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, TypeVar

from torch import nn

from zjulab.crs.checkpoint import read_checkpoint, save_checkpoint
from zjulab.crs.config import TrainConfig
from zjulab.crs.errors import CheckpointError, NotTrainedError

__all__ = ["EncoderModel"]

M = TypeVar("M", bound="EncoderModel")


class EncoderModel:
    """Base class: holds ``config``, the backbone source, ``net`` and ``tokenizer``.

    Subclasses set :attr:`task` and :attr:`config_class`, build ``net`` in :meth:`_restore`
    (from checkpoint metadata) and describe that metadata in :meth:`_meta`.

    Args:
        config: Settings (the subclass's config class; defaults when None).
        model: A loaded encoder (trained in place) instead of ``config.model_name_or_path``.
        tokenizer: Its tokenizer (or id/path).
    """

    task: ClassVar[str] = ""
    config_class: ClassVar[type[TrainConfig]] = TrainConfig

    def __init__(self, config: Any = None, *, model: Any = None, tokenizer: Any = None) -> None:
        self.config: Any = config or self.config_class()
        self._model_src = model if model is not None else self.config.model_name_or_path
        self._tok_src = tokenizer
        self.net: Any = None
        self.tokenizer: Any = None

    def _meta(self) -> dict[str, Any]:
        """Checkpoint metadata needed to rebuild the task layers."""
        return {}

    def _restore(self, meta: dict[str, Any]) -> None:
        """Build ``net`` (untrained task layers) from checkpoint metadata."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint directory (see :func:`~zjulab.crs.checkpoint.save_checkpoint`).

        Raises:
            NotTrainedError: Nothing was trained or loaded yet.
        """
        if self.net is None:
            raise NotTrainedError("nothing to save: fit() or load() first")
        net: nn.Module = self.net
        state = {k: v for k, v in net.state_dict().items() if not k.startswith("encoder.")}
        save_checkpoint(
            path,
            task=self.task,
            config=self.config,
            backbone=self.net.encoder,
            tokenizer=self.tokenizer,
            head_state=state,
            meta=self._meta(),
        )

    @classmethod
    def load(cls: type[M], path: str | os.PathLike[str], *, device: str | None = None) -> M:
        """Load a checkpoint written by :meth:`save` (optionally onto another device).

        Raises:
            NotTrainedError: No checkpoint at ``path``.
            SchemaVersionError: Another checkpoint format version.
            UnknownLabelError: The checkpoint is another task's.
            CheckpointError: A file is missing or altered, or the head weights do not cover
                exactly the head's parameters.
        """
        cfg_dict, meta, backbone, state = read_checkpoint(path, cls.task)
        if device is not None:
            cfg_dict["device"] = device
        obj = cls(cls.config_class(**cfg_dict), model=str(backbone), tokenizer=str(backbone))
        obj._restore(meta)
        if state is None:
            raise CheckpointError(f"{path}: checkpoint holds no head weights (head.pt)")
        current = obj.net.state_dict()
        own = {k for k in current if not k.startswith("encoder.")}
        if set(state) != own:
            missing, extra = sorted(own - set(state)), sorted(set(state) - own)
            raise CheckpointError(
                f"{path}: head weights do not fit the model (missing {missing}, unexpected {extra})"
            )
        # encoder.* was loaded from backbone/; every other tensor must come from head.pt
        full = {k: v for k, v in current.items() if k.startswith("encoder.")} | state
        try:
            obj.net.load_state_dict(full, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: head weights do not fit the model: {exc}") from exc
        obj.net.eval()
        return obj
