"""zjulab.common: the thin shared layer of the zjulab libraries.

Device and dtype resolution, model loading with actionable errors, the ``ChatModel`` /
``TextEncoder`` / ``PairScorer`` protocols with local and HTTP implementations, structured
output, seeding, batching, atomic IO and offline test doubles.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Errors are imported eagerly: they are tiny and every library catches them.
from zjulab.common.errors import (
    ConfigError,
    DeviceNotAvailableError,
    IndexMismatchError,
    InputError,
    MissingDependencyError,
    ModelNotAvailableError,
    NotFoundError,
    RemoteModelError,
    SchemaVersionError,
    SerializationError,
    StoreError,
    StructuredOutputError,
    ZjulabError,
)

# ``progress`` is both a submodule and a function: import it eagerly so the function wins.
from zjulab.common.progress import progress

__version__ = "0.2.0.dev0"

# Every other public name is imported on first use, so ``import zjulab.common`` never loads
# torch or transformers; a torch-backed name on a torch-free install raises
# MissingDependencyError with the install line.
_LAZY: dict[str, str] = {
    "batched": "zjulab.common.batching",
    "length_buckets": "zjulab.common.batching",
    "token_budget_batches": "zjulab.common.batching",
    "ChatResult": "zjulab.common.chat",
    "IncompleteAnswerError": "zjulab.common.errors",
    "OpenAIChatModel": "zjulab.common.chat",
    "TransformersChatModel": "zjulab.common.chat",
    "Usage": "zjulab.common.chat",
    "default_chat_model": "zjulab.common.defaults",
    "default_encoder": "zjulab.common.defaults",
    "resolve_device": "zjulab.common.device",
    "resolve_dtype": "zjulab.common.device",
    "SentenceTransformerEncoder": "zjulab.common.encoders",
    "TransformersEncoder": "zjulab.common.encoders",
    "l2_normalize": "zjulab.common.encoders",
    "pool_hidden": "zjulab.common.encoders",
    "atomic_directory": "zjulab.common.io",
    "atomic_write": "zjulab.common.io",
    "atomic_write_bytes": "zjulab.common.io",
    "atomic_write_text": "zjulab.common.io",
    "directory_lock": "zjulab.common.io",
    "remove_stale_temps": "zjulab.common.io",
    "temp_dir_beside": "zjulab.common.io",
    "place_new_file": "zjulab.common.io",
    "read_json": "zjulab.common.io",
    "read_jsonl": "zjulab.common.io",
    "recover_directory": "zjulab.common.io",
    "write_json": "zjulab.common.io",
    "write_jsonl": "zjulab.common.io",
    "load_causal_lm": "zjulab.common.loading",
    "load_cross_encoder": "zjulab.common.loading",
    "load_encoder": "zjulab.common.loading",
    "load_tokenizer": "zjulab.common.loading",
    "ChatModel": "zjulab.common.protocols",
    "Conversation": "zjulab.common.protocols",
    "Message": "zjulab.common.protocols",
    "PairScorer": "zjulab.common.protocols",
    "TextEncoder": "zjulab.common.protocols",
    "CrossEncoderScorer": "zjulab.common.scorers",
    "YesNoScorer": "zjulab.common.scorers",
    "seed_everything": "zjulab.common.seeding",
    "generate_structured": "zjulab.common.structured",
    "parse_json": "zjulab.common.structured",
    "parse_structured": "zjulab.common.structured",
    "schema_prompt": "zjulab.common.structured",
    "OpenAIEncoder": "zjulab.common.embeddings",
    "require": "zjulab.common.deps",
}

__all__ = [
    "ChatModel",
    "ChatResult",
    "ConfigError",
    "Conversation",
    "CrossEncoderScorer",
    "DeviceNotAvailableError",
    "IncompleteAnswerError",
    "IndexMismatchError",
    "InputError",
    "Message",
    "MissingDependencyError",
    "ModelNotAvailableError",
    "NotFoundError",
    "OpenAIChatModel",
    "OpenAIEncoder",
    "PairScorer",
    "RemoteModelError",
    "SchemaVersionError",
    "SerializationError",
    "SentenceTransformerEncoder",
    "StoreError",
    "StructuredOutputError",
    "TextEncoder",
    "TransformersChatModel",
    "TransformersEncoder",
    "Usage",
    "YesNoScorer",
    "ZjulabError",
    "atomic_directory",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "directory_lock",
    "remove_stale_temps",
    "temp_dir_beside",
    "place_new_file",
    "batched",
    "default_chat_model",
    "default_encoder",
    "generate_structured",
    "l2_normalize",
    "length_buckets",
    "load_causal_lm",
    "load_cross_encoder",
    "load_encoder",
    "load_tokenizer",
    "parse_json",
    "parse_structured",
    "pool_hidden",
    "progress",
    "read_json",
    "read_jsonl",
    "recover_directory",
    "require",
    "resolve_device",
    "resolve_dtype",
    "schema_prompt",
    "seed_everything",
    "token_budget_batches",
    "write_json",
    "write_jsonl",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zjulab.common' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # static analysers see the names as if imported eagerly
    from zjulab.common.batching import batched, length_buckets, token_budget_batches
    from zjulab.common.chat import (
        ChatResult,
        IncompleteAnswerError,
        OpenAIChatModel,
        TransformersChatModel,
        Usage,
    )
    from zjulab.common.defaults import default_chat_model, default_encoder
    from zjulab.common.deps import require
    from zjulab.common.device import resolve_device, resolve_dtype
    from zjulab.common.embeddings import OpenAIEncoder
    from zjulab.common.encoders import (
        SentenceTransformerEncoder,
        TransformersEncoder,
        l2_normalize,
        pool_hidden,
    )
    from zjulab.common.io import (
        atomic_directory,
        atomic_write,
        atomic_write_bytes,
        atomic_write_text,
        directory_lock,
        place_new_file,
        read_json,
        read_jsonl,
        recover_directory,
        remove_stale_temps,
        temp_dir_beside,
        write_json,
        write_jsonl,
    )
    from zjulab.common.loading import load_causal_lm, load_cross_encoder, load_encoder, load_tokenizer
    from zjulab.common.protocols import ChatModel, Conversation, Message, PairScorer, TextEncoder
    from zjulab.common.scorers import CrossEncoderScorer, YesNoScorer
    from zjulab.common.seeding import seed_everything
    from zjulab.common.structured import generate_structured, parse_json, parse_structured, schema_prompt
