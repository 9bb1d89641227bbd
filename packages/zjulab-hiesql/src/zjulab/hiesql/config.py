"""Configuration dataclasses of zjulab-hiesql."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zjulab.hiesql.errors import HieSqlConfigError

__all__ = [
    "ContextMode",
    "DecoderConfig",
    "EncoderConfig",
    "LinkingConfig",
    "ParserConfig",
    "PretrainConfig",
    "SandboxConfig",
]

ContextMode = Literal["utterance", "history", "history_sql"]


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise HieSqlConfigError(f"{name} must be > 0, got {value!r}")


@dataclass
class SandboxConfig:
    """Limits of the SQLite sandbox.

    Args:
        timeout_s: Wall-clock limit per statement (a progress handler in-process; with
            ``isolation="process"`` the worker is also killed at the deadline).
        max_rows: Rows kept per result.
        max_bytes: Python memory (``sys.getsizeof`` of the row tuples and their values) allowed
            in one result.
        max_cell_bytes: Longest string or blob one value may be (SQLite's length limit; at
            most ``max_bytes``). A longer value, stored or computed, raises
            :class:`~zjulab.hiesql.errors.SandboxLimitError`; it is never cut or returned as NULL.
        on_row_limit: ``"truncate"`` keeps the first rows within ``max_rows``/``max_bytes`` and
            flags the result ``truncated``; ``"raise"`` raises
            :class:`~zjulab.hiesql.errors.SandboxLimitError`.
        progress_steps: SQLite VM instructions between two time checks.
        isolation: ``"process"`` (the default) runs each statement in a worker process under
            CPU-time and address-space rlimits, killed at the wall-clock deadline: the only hard
            bound on work inside one SQLite opcode or in preparing a statement (costs a worker
            start, about 0.15 s, per sandbox, and ~0.1 ms per statement). ``"in_process"`` runs on
            a connection in this process: the same authorizer, limits and progress handler, but
            a single long opcode (e.g. a ``LIKE`` over a long value) can outlive ``timeout_s``.
        memory_limit_bytes: Address-space limit of the worker process (``isolation="process"``).
        extra_functions: SQL functions allowed on top of
            :data:`~zjulab.hiesql.sandbox.ALLOWED_FUNCTIONS` (e.g. ones a database relies on).
    """

    timeout_s: float = 2.0  # interactive use: a human waits; gold Spider queries run in milliseconds
    max_rows: int = 1000  # more rows are never shown nor compared usefully in a chat
    max_bytes: int = 8_000_000  # bounds memory on a wide or text-heavy result
    max_cell_bytes: int = 1_000_000  # no text or blob a user reads in a result is longer
    on_row_limit: Literal["truncate", "raise"] = "truncate"
    progress_steps: int = 1000  # ~microseconds between checks: a cheap check, a tight limit
    isolation: Literal["in_process", "process"] = "process"  # hostile SQL: a hard time bound
    memory_limit_bytes: int = 2_000_000_000  # a Python interpreter plus SQLite's sorter and cache
    extra_functions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _positive("timeout_s", self.timeout_s)
        _positive("max_rows", self.max_rows)
        _positive("max_bytes", self.max_bytes)
        _positive("max_cell_bytes", self.max_cell_bytes)
        _positive("progress_steps", self.progress_steps)
        _positive("memory_limit_bytes", self.memory_limit_bytes)
        if self.on_row_limit not in ("truncate", "raise"):
            raise HieSqlConfigError(f"on_row_limit must be 'truncate' or 'raise', got {self.on_row_limit!r}")
        if self.isolation not in ("in_process", "process"):
            raise HieSqlConfigError(f"isolation must be 'in_process' or 'process', got {self.isolation!r}")
        self.extra_functions = tuple(str(f) for f in self.extra_functions)

    @property
    def cell_limit(self) -> int:
        """SQLite's length limit on this connection: ``min(max_cell_bytes, max_bytes)``, at least 1000."""
        return max(1000, min(self.max_cell_bytes, self.max_bytes))


@dataclass
class LinkingConfig:
    """Schema-linking graph construction.

    Args:
        partial_min_chars: Shortest question n-gram (in characters) that may count as a
            partial name match.
        max_ngram: Longest question n-gram compared with table/column names.
        value_match: Look question tokens up among database values (needs a database).
        value_sample_rows: Distinct values read per text column for value matching.
        value_timeout_s: Total time the value reading of one database may take (a large or
            hostile database cannot stall linking; the values read so far are used and a
            warning names what was skipped). Values are read once per file and cached.
        value_isolation: Sandbox isolation of the value reading when no sandbox is passed
            (``"process"``: a worker killed at the deadline, see
            :class:`SandboxConfig`).
    """

    partial_min_chars: int = 3  # shorter pieces ("id", "a") match almost every name
    max_ngram: int = 4  # Spider column names rarely exceed four words
    value_match: bool = True
    value_sample_rows: int = 2000  # enough to cover categorical columns, cheap to read
    value_timeout_s: float = 2.0  # the sandbox's interactive limit
    value_isolation: Literal["in_process", "process"] = "process"  # a user's file is untrusted

    def __post_init__(self) -> None:
        if self.value_isolation not in ("in_process", "process"):
            raise HieSqlConfigError(
                f"value_isolation must be 'in_process' or 'process', got {self.value_isolation!r}"
            )
        _positive("partial_min_chars", self.partial_min_chars)
        _positive("max_ngram", self.max_ngram)
        _positive("value_sample_rows", self.value_sample_rows)
        _positive("value_timeout_s", self.value_timeout_s)


@dataclass
class EncoderConfig:
    """The HIE-SQL encoder: a pretrained encoder plus relation-aware self-attention layers.

    Args:
        model_name_or_path: Hub id or path of the pretrained encoder (``AutoModel``).
        context: What enters the encoder: the current utterance only, plus the history
            utterances, or plus the history and the last predicted SQL (HIE-SQL).
        max_history: History utterances kept (most recent first).
        max_length: Token budget of the encoder input; history and then schema are cut first.
        rat_layers: Relation-aware self-attention layers on top of the pretrained encoder.
        rat_heads: Attention heads in each relation-aware layer.
        dropout: Dropout in the relation-aware layers.
    """

    model_name_or_path: str = "microsoft/codebert-base"  # a bimodal NL/code encoder, as in the paper
    context: ContextMode = "history_sql"
    max_history: int = 3  # older turns rarely matter and cost input length
    max_length: int = 512  # the position limit of BERT-style encoders
    rat_layers: int = 2  # a few layers suffice on top of a pretrained encoder
    rat_heads: int = 8
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.context not in ("utterance", "history", "history_sql"):
            raise HieSqlConfigError(f"context must be utterance/history/history_sql, got {self.context!r}")
        if self.max_history < 0:
            raise HieSqlConfigError(f"max_history must be >= 0, got {self.max_history}")
        _positive("max_length", self.max_length)
        if self.rat_layers < 0:
            raise HieSqlConfigError(f"rat_layers must be >= 0, got {self.rat_layers}")
        _positive("rat_heads", self.rat_heads)
        if not 0.0 <= self.dropout < 1.0:
            raise HieSqlConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class PretrainConfig:
    """Bimodal NL–SQL masked-LM pretraining.

    Args:
        mask_prob: Share of tokens masked per example.
        sql_mask_share: Share of the masked tokens drawn from the SQL side (the rest from the
            utterance side), so that each modality must be predicted from the other.
        steps: Optimisation steps.
        batch_size: Examples per step.
        lr: AdamW learning rate.
        max_length: Tokens per paired example.
        seed: Random seed.
    """

    mask_prob: float = 0.15  # the BERT rate
    sql_mask_share: float = 0.5  # both modalities masked equally
    steps: int = 1000
    batch_size: int = 16
    lr: float = 5e-5  # continued pretraining: small steps keep the pretrained knowledge
    max_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise HieSqlConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.sql_mask_share <= 1.0:
            raise HieSqlConfigError(f"sql_mask_share must be in [0, 1], got {self.sql_mask_share}")
        _positive("steps", self.steps)
        _positive("batch_size", self.batch_size)
        _positive("lr", self.lr)
        _positive("max_length", self.max_length)


@dataclass
class DecoderConfig:
    """The SQL decoder (a causal LM conditioned on the encoder states).

    Args:
        model_name_or_path: Hub id or path of the causal LM.
        lora: Train LoRA adapters (peft) instead of every decoder weight.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        prefix_tokens: Encoder states passed to the decoder as a soft prefix (the decoder also
            reads the serialized input as text).
        prefix_select: Which states: ``"linked"`` (question tokens, then schema items the
            linking graph reaches, then the last SQL and history, see
            :func:`~zjulab.hiesql.encoder_input.prefix_positions`) or ``"first"`` (the first
            ``prefix_tokens`` positions; parsers saved before this option load with it).
        text_prompt: Also give the decoder the serialized input as ordinary tokens.
        num_beams: Beams searched at prediction time.
        max_new_tokens: Longest SQL generated.
    """

    model_name_or_path: str = "Qwen/Qwen2.5-Coder-0.5B"  # a small code LM that writes SQL
    lora: bool = True  # fits on one GPU and keeps the base model reusable
    lora_r: int = 16
    lora_alpha: int = 32
    prefix_tokens: int = 64  # the utterance and the linked schema items
    prefix_select: Literal["linked", "first"] = "linked"
    text_prompt: bool = True
    num_beams: int = 4  # enough candidates for validity re-ranking to help
    max_new_tokens: int = 160  # longest SParC gold query is ~120 tokens

    def __post_init__(self) -> None:
        _positive("lora_r", self.lora_r)
        _positive("lora_alpha", self.lora_alpha)
        if self.prefix_tokens < 0:
            raise HieSqlConfigError(f"prefix_tokens must be >= 0, got {self.prefix_tokens}")
        _positive("num_beams", self.num_beams)
        _positive("max_new_tokens", self.max_new_tokens)
        if self.prefix_select not in ("linked", "first"):
            raise HieSqlConfigError(f"prefix_select must be 'linked' or 'first', got {self.prefix_select!r}")


@dataclass
class ParserConfig:
    """Training of :class:`~zjulab.hiesql.parser.HieSqlParser`.

    Args:
        encoder: Encoder settings.
        decoder: Decoder settings.
        linking: Schema-linking settings.
        epochs: Passes over the training turns.
        batch_size: Turns per step.
        lr: AdamW learning rate.
        max_steps: Stop after this many steps (0 = no limit).
        teacher_forcing_last_sql: Use the gold previous SQL as "last SQL" during training
            (predictions are used at inference).
        seed: Random seed.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    linking: LinkingConfig = field(default_factory=LinkingConfig)
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-4  # LoRA and freshly initialised layers tolerate a larger rate
    max_steps: int = 0
    teacher_forcing_last_sql: bool = True  # the standard practice for SParC/CoSQL training
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        _positive("lr", self.lr)
        if self.max_steps < 0:
            raise HieSqlConfigError(f"max_steps must be >= 0, got {self.max_steps}")
