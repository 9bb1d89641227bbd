"""Errors raised by zjulab.crs.

Every error derives from :class:`CrsError`; each narrow error also derives from the matching
class of :mod:`zjulab.common.errors`, so ``except InputError`` catches malformed data from any
zjulab library.
"""

from __future__ import annotations

from zjulab.common.errors import ConfigError, InputError, NotFoundError, StoreError, ZjulabError

__all__ = [
    "CheckpointError",
    "CrsConfigError",
    "CrsError",
    "DataFormatError",
    "MissingScoresError",
    "MetricInputError",
    "NotTrainedError",
    "UnknownLabelError",
]


class CrsError(ZjulabError):
    """Base class of every error raised on purpose by zjulab.crs."""


class CrsConfigError(CrsError, ConfigError):
    """A configuration value is invalid; the message names the field and the value."""


class DataFormatError(CrsError, InputError):
    """A data file or record does not follow the U-NEED format.

    The message names the file (when known), the record (dialogue index and ``sid``, utterance
    ``seq_no``, CSV line) and the offending field.
    """


class MetricInputError(CrsError, InputError):
    """A metric got inputs of mismatched lengths, bad shapes or out-of-range values."""


class UnknownLabelError(CrsError, NotFoundError):
    """A label (attribute name, tag, task name) is not in the vocabulary a model was built with."""


class NotTrainedError(CrsError, StoreError):
    """A model was asked to predict before it was fitted or loaded."""


class CheckpointError(CrsError, StoreError):
    """A checkpoint is incomplete or altered.

    A listed file is missing, its hash differs, or the saved head weights do not cover exactly
    the model's parameters.
    """


class MissingScoresError(CrsError, NotFoundError):
    """Task 5 was asked for on data that carries no human quality scores.

    The message names the side file (``quality_scores.csv``) that would hold them.
    """
