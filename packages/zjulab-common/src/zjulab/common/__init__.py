"""zjulab.common: the thin shared layer of the zjulab libraries.

Device and dtype resolution, model loading with actionable errors, the ``ChatModel`` /
``TextEncoder`` / ``PairScorer`` protocols with local and HTTP implementations, structured
output, seeding, batching, atomic IO and offline test doubles.
"""

from zjulab.common.batching import batched, length_buckets, token_budget_batches
from zjulab.common.chat import OpenAIChatModel, TransformersChatModel, Usage
from zjulab.common.defaults import default_chat_model, default_encoder
from zjulab.common.device import resolve_device, resolve_dtype
from zjulab.common.encoders import SentenceTransformerEncoder, TransformersEncoder, l2_normalize, pool_hidden
from zjulab.common.errors import (
    ConfigError,
    DeviceNotAvailableError,
    IndexMismatchError,
    InputError,
    ModelNotAvailableError,
    NotFoundError,
    RemoteModelError,
    SchemaVersionError,
    StoreError,
    StructuredOutputError,
    ZjulabError,
)
from zjulab.common.io import (
    atomic_directory,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    read_jsonl,
    recover_directory,
    write_json,
    write_jsonl,
)
from zjulab.common.loading import load_causal_lm, load_cross_encoder, load_encoder, load_tokenizer
from zjulab.common.progress import progress
from zjulab.common.protocols import ChatModel, Conversation, Message, PairScorer, TextEncoder
from zjulab.common.scorers import CrossEncoderScorer, YesNoScorer
from zjulab.common.seeding import seed_everything
from zjulab.common.structured import (
    generate_structured,
    parse_json,
    parse_structured,
    schema_prompt,
)

__version__ = "0.1.0"

__all__ = [
    "ChatModel",
    "ConfigError",
    "Conversation",
    "CrossEncoderScorer",
    "DeviceNotAvailableError",
    "IndexMismatchError",
    "InputError",
    "Message",
    "ModelNotAvailableError",
    "NotFoundError",
    "OpenAIChatModel",
    "PairScorer",
    "RemoteModelError",
    "SchemaVersionError",
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
    "batched",
    "default_chat_model",
    "default_encoder",
    "generate_structured",
    "l2_normalize",
    "pool_hidden",
    "length_buckets",
    "load_causal_lm",
    "load_cross_encoder",
    "load_encoder",
    "load_tokenizer",
    "parse_json",
    "parse_structured",
    "progress",
    "read_json",
    "read_jsonl",
    "recover_directory",
    "resolve_device",
    "resolve_dtype",
    "schema_prompt",
    "seed_everything",
    "token_budget_batches",
    "write_json",
    "write_jsonl",
]
