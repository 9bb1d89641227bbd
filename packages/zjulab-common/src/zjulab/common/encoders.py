"""Text encoders: sentence-transformers models and mean-pooled transformers encoders."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from zjulab.common.batching import length_buckets, padding_side, tokenizer_lock
from zjulab.common.deps import require
from zjulab.common.device import DeviceLike, DtypeLike, resolve_device
from zjulab.common.errors import ConfigError, InputError
from zjulab.common.progress import progress

if TYPE_CHECKING:
    import torch

__all__ = ["SentenceTransformerEncoder", "TransformersEncoder", "l2_normalize", "pool_hidden"]

logger = logging.getLogger(__name__)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale each row of ``x`` to unit L2 norm (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


def pool_hidden(
    hidden: torch.Tensor, attention_mask: torch.Tensor, mode: Literal["mean", "cls", "last"] = "mean"
) -> torch.Tensor:
    """Pool ``[B, L, H]`` hidden states to ``[B, H]``.

    ``mean`` averages the positions ``attention_mask`` marks, ``cls`` takes the first position,
    ``last`` the last marked position of each row (right padding).
    """
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        torch = require("torch", feature="pool_hidden")
        last = attention_mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("encode() takes a list of texts, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"text {i} is {type(t).__name__}, not str")
    return out


class TransformersEncoder:
    """Encode texts with a transformers ``AutoModel`` and pooling.

    Args:
        model: Hub id, local directory, or a loaded model.
        tokenizer: Tokenizer or its id/path (defaults to the model's).
        pooling: ``"mean"`` over non-padding tokens, ``"cls"`` (first token), or ``"last"``
            (last non-padding token, as decoder embedders such as Qwen3-Embedding use).
        normalize: L2-normalise the output (the protocol expects unit vectors).
        max_length: Truncation length in tokens.
        prompt: Optional text prepended to every input (e.g. a query instruction).
        device: Device for the model.
        dtype: Weight dtype.
        show_progress: Progress bar while encoding (``None``: only on a terminal).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        pooling: Literal["mean", "cls", "last"] = "mean",
        normalize: bool = True,
        max_length: int = 512,
        prompt: str = "",
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        show_progress: bool | None = None,
    ) -> None:
        if pooling not in ("mean", "cls", "last"):
            raise ConfigError(f"pooling must be 'mean', 'cls' or 'last', got {pooling!r}")
        if max_length <= 0:
            raise ConfigError(f"max_length must be positive, got {max_length}")
        require("torch", feature="TransformersEncoder")
        from zjulab.common.loading import load_encoder, resolve_model_and_tokenizer

        self.model_id, model, tokenizer = resolve_model_and_tokenizer(
            model, tokenizer, device, dtype, load_encoder
        )
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.prompt = prompt
        self.show_progress = show_progress
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        """Encode ``texts`` to a ``[n, dim]`` float32 array (unit rows when ``normalize``).

        Keywords: ``prompt`` overrides the instance prompt for this call.

        Raises:
            InputError: ``texts`` is not a list of strings.
        """
        import torch

        with torch.inference_mode():
            return self._encode(texts, **kwargs, batch_size=batch_size)

    def _encode(self, texts: Sequence[str], batch_size: int, **kwargs: Any) -> np.ndarray:
        items = _check_texts(texts)
        prompt = kwargs.get("prompt", self.prompt)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        items = [prompt + t for t in items]
        device = next(self.model.parameters()).device
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        order = length_buckets(items, len, batch_size)
        with padding_side(self.tokenizer, "right"):
            for idx in progress(order, desc="Encoding", show=self.show_progress, unit="batch"):
                enc = self.tokenizer(
                    [items[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                hidden = self.model(**enc).last_hidden_state.float()
                out[idx] = pool_hidden(hidden, enc["attention_mask"], self.pooling).cpu().numpy()
        return l2_normalize(out) if self.normalize else out


class SentenceTransformerEncoder:
    """Encode texts with a ``sentence_transformers.SentenceTransformer``.

    Needs the ``sentence-transformers`` package (``pip install 'zjulab-common[sentence-transformers]'``).

    Args:
        model: Hub id, local directory, or a loaded ``SentenceTransformer``.
        device: Device for the model.
        dtype: Weight dtype (``"auto"``: fp32 on CPU; half precision on GPU).
        prompt: Optional text prepended to every input.
        show_progress: Progress bar while encoding (``None``: only on a terminal).
        **kwargs: Passed to the ``SentenceTransformer`` constructor.
    """

    def __init__(
        self,
        model: Any,
        *,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        prompt: str = "",
        show_progress: bool | None = None,
        **kwargs: Any,
    ) -> None:
        torch = require("torch", feature="SentenceTransformerEncoder")
        from zjulab.common.device import resolve_dtype
        from zjulab.common.loading import _guard

        dev = resolve_device(device)
        if isinstance(model, (str, os.PathLike)):
            st = require(
                "sentence_transformers",
                "pip install 'zjulab-common[sentence-transformers]'",
                feature="SentenceTransformerEncoder",
            )
            SentenceTransformer = st.SentenceTransformer
            name = str(model)
            self.model_id = name
            model = _guard(name, lambda: SentenceTransformer(name, device=str(dev), **kwargs))
        else:
            self.model_id = str(
                (
                    getattr(model, "model_card_data", None)
                    and getattr(model.model_card_data, "base_model", None)
                )
                or type(model).__name__
            )
            model = model.to(dev)
        dt = resolve_dtype(dtype, dev)
        if dt != torch.float32:
            model = model.to(dt)
        self.model = model
        self.prompt = prompt
        self.show_progress = show_progress
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: Sequence[str], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        """Encode ``texts`` to a ``[n, dim]`` float32 array with unit rows.

        Raises:
            InputError: ``texts`` is not a list of strings.
        """
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        prompt = kwargs.get("prompt", self.prompt)
        show = self.show_progress
        if show is None:
            import sys

            show = sys.stderr.isatty()
        # the model's tokenizer may be shared with other encoders or scorers in other threads:
        # its backend padding/truncation state is set on every call, so calls take turns
        tok = getattr(self.model, "tokenizer", None)
        with tokenizer_lock(tok) if tok is not None else contextlib.nullcontext():
            emb = self.model.encode(
                [prompt + t for t in items],
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=show,
            )
        return np.asarray(emb, dtype=np.float32)
