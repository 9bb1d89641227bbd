"""Configuration dataclasses of zjulab-rtt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zjulab.rtt.errors import RTTConfigError

__all__ = ["TOKEN_NORMS", "DiscriminatorConfig", "RTTConfig", "TokenNorm"]

TokenNorm = Literal["intra_sample", "group_token", "rubric_mean_group_token", "softmax_rubrics"]
"""The token-advantage normalisations: the paper's method and the three it is compared with."""

TOKEN_NORMS: tuple[str, ...] = ("intra_sample", "group_token", "rubric_mean_group_token", "softmax_rubrics")


@dataclass
class RTTConfig:
    """Settings of RTT-GRPO: how token-level rubric credit joins the GRPO advantage.

    Args:
        lam: Weight λ of the token-level advantage. ``0`` gives plain GRPO.
        combine: ``"add"``: ``A = A_resp + λ·A_tok`` (the paper's RTT-GRPO);
            ``"mix"``: ``A = (1-λ)·A_resp + λ·A_tok`` (then ``λ`` must lie in [0, 1]).
        token_norm: How ``x = w·s`` becomes a token advantage. ``"intra_sample"`` is the paper's
            Intra-sample Token Group Normalisation; the others are the ablations it compares.
        eps: Added to every standard deviation before dividing.
        softmax_temperature: Temperature of the softmax over rubrics (``"softmax_rubrics"`` only).
        relevance_batch_size: (response, rubric) pairs scored together by the relevance model.
        max_rubrics: Rubrics used per prompt; extra ones are ignored (with a warning).
        token_adv_clip: Clip every token advantage ``A_tok`` to ``[-c, c]`` before it joins
            ``A_resp`` (``None``: no clip, the paper's). Standardising over a response's ``T``
            tokens gives a lone relevant token ``±sqrt(T - 1)`` (one blamed token in 1,000
            gets -31.6, dwarfing ``A_resp``); a clip bounds that growth.
    """

    lam: float = 0.5  # the paper's default weight of the token-level term
    combine: Literal["add", "mix"] = "add"  # RTT-GRPO adds the token term to the GRPO advantage
    token_norm: TokenNorm = "intra_sample"  # the paper's proposed normalisation
    eps: float = 1e-6  # keeps constant-relevance rubrics finite (their credit is then 0)
    softmax_temperature: float = 1.0  # plain softmax, as in the compared variant
    relevance_batch_size: int = 16  # fits a 0.6B discriminator on one consumer GPU at 2k tokens
    max_rubrics: int = 20  # the authors cap rubrics per prompt at 20
    token_adv_clip: float | None = None  # the paper does not clip

    def __post_init__(self) -> None:
        if self.combine not in ("add", "mix"):
            raise RTTConfigError(f"combine must be 'add' or 'mix', got {self.combine!r}")
        if self.token_norm not in TOKEN_NORMS:
            raise RTTConfigError(f"token_norm must be one of {list(TOKEN_NORMS)}, got {self.token_norm!r}")
        if self.lam < 0:
            raise RTTConfigError(f"lam must be >= 0, got {self.lam}")
        if self.combine == "mix" and self.lam > 1:
            raise RTTConfigError(f"lam must lie in [0, 1] with combine='mix', got {self.lam}")
        if self.eps < 0:
            raise RTTConfigError(f"eps must be >= 0, got {self.eps}")
        if self.softmax_temperature <= 0:
            raise RTTConfigError(f"softmax_temperature must be positive, got {self.softmax_temperature}")
        if self.relevance_batch_size <= 0:
            raise RTTConfigError(f"relevance_batch_size must be positive, got {self.relevance_batch_size}")
        if self.token_adv_clip is not None and not self.token_adv_clip > 0:
            raise RTTConfigError(f"token_adv_clip must be positive or None, got {self.token_adv_clip}")
        if self.max_rubrics <= 0:
            raise RTTConfigError(f"max_rubrics must be positive, got {self.max_rubrics}")


@dataclass
class DiscriminatorConfig:
    """Training settings of the token-level relevance discriminator.

    Args:
        learning_rate: AdamW learning rate (head and backbone or LoRA adapter).
        epochs: Passes over the training examples.
        batch_size: (criterion, response) pairs per optimiser step.
        max_length: Longest input (instruction + criterion + response) in tokens; longer
            responses are cut from the right.
        weight_decay: AdamW weight decay.
        pos_weight: Weight of positive tokens in the BCE loss (relevant tokens are rare);
            ``None`` weighs both classes alike.
        threshold: Probability above which a token counts as relevant in metrics.
        lora_r: Rank of a LoRA adapter on the backbone; ``None`` trains the full backbone.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout inside the LoRA adapter.
        lora_target_modules: Backbone modules the LoRA adapter wraps.
        seed: Seed for shuffling and the head's initialisation.
        log_every: Steps between loss log lines.
    """

    learning_rate: float = 2e-5  # full fine-tuning of a sub-1B backbone; raise it (1e-4+) with LoRA
    epochs: int = 1  # the authors' discriminators see their annotated data once or twice
    batch_size: int = 8  # fits a 0.6B backbone at 1k tokens in 24 GB with fp32 Adam states
    max_length: int = 1024  # covers typical IFEval-style responses with the criterion prefix
    weight_decay: float = 0.0  # short fine-tunes do not need it
    pos_weight: float | None = None  # plain BCE, as in the paper
    threshold: float = 0.5  # the natural cut of a sigmoid output
    lora_r: int | None = None  # full fine-tuning by default; 16 is a common LoRA choice
    lora_alpha: int = 32  # 2 x r for r = 16, the usual pairing
    lora_dropout: float = 0.05  # the peft examples' default
    seed: int = 0  # reproducible runs
    log_every: int = 10  # a line every few seconds on a GPU
    lora_target_modules: list[str] | str = field(default="all-linear")  # every linear layer of the backbone

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise RTTConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.epochs <= 0:
            raise RTTConfigError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise RTTConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.max_length < 8:
            raise RTTConfigError(f"max_length must be at least 8, got {self.max_length}")
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise RTTConfigError(f"pos_weight must be positive or None, got {self.pos_weight}")
        if not 0.0 < self.threshold < 1.0:
            raise RTTConfigError(f"threshold must lie in (0, 1), got {self.threshold}")
        if self.lora_r is not None and self.lora_r <= 0:
            raise RTTConfigError(f"lora_r must be positive or None, got {self.lora_r}")
        if self.log_every <= 0:
            raise RTTConfigError(f"log_every must be positive, got {self.log_every}")
