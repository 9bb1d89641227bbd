"""Configuration dataclasses of the five task trainers.

Every trainer config derives from :class:`TrainConfig`. Defaults name real hub models (loaded
lazily, by id); the tests and the demo pass tiny or embedded models instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zjulab.crs.errors import CrsConfigError

__all__ = [
    "ElicitationConfig",
    "GeneratorConfig",
    "QualityConfig",
    "RankerConfig",
    "SASRecConfig",
    "TaggerConfig",
    "TrainConfig",
]


@dataclass
class TrainConfig:
    """Settings shared by every trainer.

    Args:
        model_name_or_path: Backbone hub id or local directory (used when no model object is
            passed to the trainer).
        max_steps: Optimiser steps; when positive it overrides ``epochs`` (the data is cycled).
        epochs: Passes over the training samples when ``max_steps`` is 0.
        batch_size: Samples per step.
        learning_rate: AdamW learning rate of the backbone.
        head_learning_rate: Learning rate of the freshly initialised layers (LSTM, CRF, heads),
            which need larger steps than pretrained weights.
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping norm (``0`` disables clipping).
        max_length: Token limit of one input.
        seed: Seed for initialisation and shuffling.
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``...
        dtype: Weight dtype of the backbone; training keeps float32 by default.
        use_accelerate: Prepare model and optimiser with accelerate (multi-GPU and mixed
            precision under ``accelerate launch``).
        log_every: Log the running loss every this many steps.
    """

    model_name_or_path: str = (
        "bert-base-chinese"  # the paper's baselines are BERT-based and U-NEED is Chinese
    )
    max_steps: int = 0  # 0 = train for `epochs`
    epochs: int = 3  # enough for BERT-size models on U-NEED-size data
    batch_size: int = 16  # fits a 12 GB GPU at max_length 128
    learning_rate: float = 3e-5  # usual BERT fine-tuning rate
    head_learning_rate: float = 1e-3  # new layers start random and need larger steps
    weight_decay: float = 0.01  # AdamW default used with BERT
    max_grad_norm: float = 1.0  # guards against CRF/LSTM gradient spikes early on
    max_length: int = 128  # U-NEED utterances are short; contexts are cut from the left
    seed: int = 0  # reproducible runs
    device: str = "auto"  # GPU when present
    dtype: str = "float32"  # full-precision master weights; use accelerate for mixed precision
    use_accelerate: bool = False  # plain single-device loop unless asked
    log_every: int = 10  # quiet enough for short runs

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise CrsConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0:
            raise CrsConfigError(f"max_steps must be >= 0, got {self.max_steps}")
        for name in ("learning_rate", "head_learning_rate"):
            if not getattr(self, name) > 0:
                raise CrsConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise CrsConfigError(
                f"weight_decay and max_grad_norm must be >= 0, got {self.weight_decay}, {self.max_grad_norm}"
            )


@dataclass
class TaggerConfig(TrainConfig):
    """Task 1: encoder + BiLSTM + CRF span tagger.

    Args:
        use_lstm: Put a BiLSTM between encoder and tag scores (the paper's best baseline).
        use_crf: Decode with a CRF (else per-token softmax, the paper's plain ``Bert`` row).
        lstm_hidden: Hidden size of each LSTM direction.
        dropout: Dropout on the encoder output.
    """

    use_lstm: bool = True  # Bert+BiLSTM+CRF is the paper's strongest task-1 baseline
    use_crf: bool = True
    lstm_hidden: int = 128  # half of a small encoder's width per direction
    dropout: float = 0.1  # BERT's own dropout rate

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lstm_hidden < 1:
            raise CrsConfigError(f"lstm_hidden must be >= 1, got {self.lstm_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise CrsConfigError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ElicitationConfig(TrainConfig):
    """Task 2: multi-label attribute classifier over the dialogue so far.

    Args:
        threshold: Sigmoid probability above which an attribute is predicted.
        min_labels: Predict at least this many attributes (the most probable ones); an
            assistant question always asks about something.
        max_turns: Most recent turns given to the encoder.
        pooling: ``"cls"`` or ``"mean"`` pooling of the encoder output.
    """

    threshold: float = 0.5  # calibrated sigmoid midpoint
    min_labels: int = 1  # every question names at least one attribute
    max_turns: int = 6  # recent turns carry the elicitation state
    pooling: Literal["cls", "mean"] = "mean"  # mean pooling is stabler for small encoders

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.threshold < 1.0:
            raise CrsConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.min_labels < 0 or self.max_turns < 1:
            raise CrsConfigError(
                f"min_labels >= 0 and max_turns >= 1 needed, got {self.min_labels}, {self.max_turns}"
            )
        if self.pooling not in ("cls", "mean"):
            raise CrsConfigError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")


@dataclass
class RankerConfig(TrainConfig):
    """Task 3: dense bi-encoder ranker (needs + behaviours vs. item knowledge).

    Args:
        temperature: Softmax temperature over cosine similarities.
        num_negatives: Candidates sampled as negatives per training sample.
        max_history: Most recent behaviour items put into the query.
        pooling: ``"cls"`` or ``"mean"`` pooling.
    """

    temperature: float = 0.05  # usual for cosine-similarity contrastive training
    num_negatives: int = 7  # 8-way softmax per sample keeps CPU steps cheap
    max_history: int = 3  # recent behaviours say most about the current need
    pooling: Literal["cls", "mean"] = "mean"  # sentence-transformers style

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise CrsConfigError(f"temperature must be positive, got {self.temperature}")
        if self.num_negatives < 1 or self.max_history < 0:
            raise CrsConfigError(
                f"num_negatives >= 1 and max_history >= 0 needed, got {self.num_negatives}, {self.max_history}"
            )
        if self.pooling not in ("cls", "mean"):
            raise CrsConfigError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")


@dataclass
class GeneratorConfig(TrainConfig):
    """Task 4: causal LM fine-tuned (LoRA by default) to write the assistant's next utterance.

    Args:
        use_lora: Train a peft LoRA adapter instead of all weights.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA input.
        target_modules: Modules that get adapters (``"all-linear"`` or a comma-separated list).
        max_new_tokens: Length limit of a generated response.
        max_turns: Most recent turns in the prompt.
    """

    model_name_or_path: str = "Qwen/Qwen2.5-0.5B-Instruct"  # small, Chinese-capable chat LM
    learning_rate: float = 2e-4  # usual LoRA rate
    max_length: int = 256  # prompt + response
    batch_size: int = 8  # causal LMs are larger than the encoders
    use_lora: bool = True  # adapters keep the base model intact and memory low
    lora_r: int = 8  # enough for a style/format adaptation
    lora_alpha: int = 16  # alpha = 2r, the common choice
    lora_dropout: float = 0.05  # light regularisation
    target_modules: str = "all-linear"  # every projection, as QLoRA recommends
    max_new_tokens: int = 48  # U-NEED responses are one or two sentences
    max_turns: int = 4  # recent turns carry the state

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise CrsConfigError(f"lora_r and lora_alpha must be >= 1, got {self.lora_r}, {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise CrsConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_new_tokens < 1 or self.max_turns < 1:
            raise CrsConfigError(
                f"max_new_tokens and max_turns must be >= 1, got {self.max_new_tokens}, {self.max_turns}"
            )


@dataclass
class QualityConfig(TrainConfig):
    """Task 5: regression head predicting a response's quality score.

    Args:
        max_turns: Most recent context turns paired with the response.
        pooling: ``"cls"`` or ``"mean"`` pooling.
    """

    max_turns: int = 4  # the response is judged against the recent context
    pooling: Literal["cls", "mean"] = "cls"  # BERT's sentence-pair convention

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_turns < 1:
            raise CrsConfigError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.pooling not in ("cls", "mean"):
            raise CrsConfigError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")


@dataclass
class SASRecConfig:
    """Task 3 baseline: SASRec trained by hopwise (RecBole); defaults are RecBole's SASRec ones.

    Args:
        n_layers: Transformer layers.
        n_heads: Attention heads.
        hidden_size: Item embedding and hidden width.
        inner_size: Feed-forward width.
        hidden_dropout_prob: Dropout on embeddings and hidden states.
        attn_dropout_prob: Dropout on attention weights.
        hidden_act: Feed-forward activation (``"gelu"``, ``"relu"``, ``"swish"``, ``"tanh"``, ``"sigmoid"``).
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: Standard deviation of the initial weights.
        loss_type: ``"CE"`` (softmax over every item) or ``"BPR"`` (one sampled negative).
        max_seq_length: Most recent items of a sequence the model reads.
        epochs: Passes over the (prefix, next item) cases.
        batch_size: Cases per step.
        learning_rate: Adam learning rate.
        weight_decay: Weight decay.
        seed: Seed of initialisation and shuffling (and of the tie order).
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``...
    """

    n_layers: int = 2  # RecBole's SASRec.yaml
    n_heads: int = 2
    hidden_size: int = 64
    inner_size: int = 256
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    loss_type: Literal["CE", "BPR"] = "CE"
    max_seq_length: int = 50  # RecBole's MAX_ITEM_LIST_LENGTH
    epochs: int = 50  # RecBole trains up to 300 with early stopping; 50 suits U-NEED-size logs
    batch_size: int = 2048  # RecBole's train_batch_size
    learning_rate: float = 1e-3  # RecBole's default
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in (
            "n_layers",
            "n_heads",
            "hidden_size",
            "inner_size",
            "max_seq_length",
            "epochs",
            "batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CrsConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.hidden_size % self.n_heads:
            raise CrsConfigError(
                f"hidden_size ({self.hidden_size}) must be a multiple of n_heads ({self.n_heads})"
            )
        for name in ("hidden_dropout_prob", "attn_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CrsConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.hidden_act not in ("gelu", "relu", "swish", "tanh", "sigmoid"):
            raise CrsConfigError(
                f"hidden_act must be gelu, relu, swish, tanh or sigmoid, got {self.hidden_act!r}"
            )
        if self.loss_type not in ("CE", "BPR"):
            raise CrsConfigError(f"loss_type must be 'CE' or 'BPR', got {self.loss_type!r}")
        if not self.learning_rate > 0 or self.weight_decay < 0 or not self.layer_norm_eps > 0:
            raise CrsConfigError("learning_rate and layer_norm_eps must be positive and weight_decay >= 0")
        if not self.initializer_range > 0:
            raise CrsConfigError(f"initializer_range must be positive, got {self.initializer_range!r}")
