"""Pair scorers: sequence-classification cross-encoders and causal-LM yes/no rerankers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from zjulab.common.batching import length_buckets, padding_side, tokenizer_lock
from zjulab.common.deps import require
from zjulab.common.device import DeviceLike, DtypeLike
from zjulab.common.errors import ConfigError, InputError
from zjulab.common.loading import resolve_model_and_tokenizer
from zjulab.common.progress import progress

torch = require("torch", feature="zjulab.common.scorers (CrossEncoderScorer, YesNoScorer)")

__all__ = ["CrossEncoderScorer", "YesNoScorer"]

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a query, judge whether the document is relevant to it."


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 2 or not all(isinstance(s, str) for s in p):
            raise InputError(f"pair {i} must be a (query, document) tuple of two strings")
        out.append((p[0], p[1]))
    return out


class CrossEncoderScorer:
    """Score pairs with an ``AutoModelForSequenceClassification`` cross-encoder.

    With one output label the score is that logit; with two it is ``logit[1] - logit[0]``
    (the log-odds of the positive class).

    Args:
        model: Hub id, local directory, or a loaded model.
        tokenizer: Tokenizer or its id/path (defaults to the model's).
        max_length: Truncation length of the joint input.
        batch_size: Default pairs per forward pass.
        device: Device for the model.
        dtype: Weight dtype.
        show_progress: Progress bar (``None``: only on a terminal).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_length: int = 512,
        batch_size: int = 16,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        show_progress: bool | None = None,
    ) -> None:
        from zjulab.common.loading import load_cross_encoder

        self.model_id, self.model, self.tokenizer = resolve_model_and_tokenizer(
            model, tokenizer, device, dtype, load_cross_encoder
        )
        self.max_length = max_length
        self.batch_size = batch_size
        self.show_progress = show_progress

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None) -> np.ndarray:
        """Score each (query, document) pair; returns float32 ``[len(pairs)]``."""
        items = _check_pairs(pairs)
        out = np.zeros(len(items), dtype=np.float32)
        if not items:
            return out
        device = next(self.model.parameters()).device
        order = length_buckets(items, lambda p: len(p[0]) + len(p[1]), batch_size or self.batch_size)
        # right padding: the classification head reads the first position
        with padding_side(self.tokenizer, "right"):
            for idx in progress(order, desc="Scoring", show=self.show_progress, unit="batch"):
                enc = self.tokenizer(
                    [items[i][0] for i in idx],
                    [items[i][1] for i in idx],
                    padding=True,
                    truncation="longest_first",
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                logits = self.model(**enc).logits.float()
                s = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
                out[idx] = s.cpu().numpy()
        return out


class YesNoScorer:
    r"""Rerank with a causal LM: score = logit("yes") − logit("no") at the answer position.

    The prompt follows the Qwen3-Reranker layout: a system message asking for a yes/no
    judgement, a user message ``<Instruct>: ...\\n<Query>: ...\\n<Document>: ...``, rendered
    with the tokenizer's chat template and the generation prompt, then ``assistant_prefix``
    (Qwen3-Reranker uses ``"<think>\\n\\n</think>\\n\\n"``). The document is truncated in tokens so
    the whole prompt fits ``max_length``; the end of the prompt is never cut.

    Args:
        model: Hub id, local directory, or a loaded causal LM.
        tokenizer: Tokenizer or its id/path (defaults to the model's).
        instruction: Task instruction placed before the query.
        system: System message.
        assistant_prefix: Text appended after the generation prompt.
        yes: Token whose logit counts for relevance.
        no: Token whose logit counts against.
        max_length: Maximum prompt length in tokens.
        batch_size: Default pairs per forward pass.
        device: Device for the model.
        dtype: Weight dtype.
        show_progress: Progress bar (``None``: only on a terminal).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        instruction: str = DEFAULT_INSTRUCTION,
        system: str = DEFAULT_SYSTEM,
        assistant_prefix: str = "",
        yes: str = "yes",
        no: str = "no",
        max_length: int = 1024,
        batch_size: int = 8,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        show_progress: bool | None = None,
    ) -> None:
        from zjulab.common.loading import load_causal_lm

        if max_length < 16:
            raise ConfigError(f"max_length must be at least 16, got {max_length}")
        self.model_id, self.model, self.tokenizer = resolve_model_and_tokenizer(
            model, tokenizer, device, dtype, load_causal_lm
        )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.instruction = instruction
        self.system = system
        self.assistant_prefix = assistant_prefix
        self.max_length = max_length
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.yes_id = self._token_id(yes)
        self._keep_last = True  # the LM head on the last position only, while the model accepts it
        self.no_id = self._token_id(no)
        if self.yes_id == self.no_id:
            raise ConfigError(f"yes={yes!r} and no={no!r} map to the same token id {self.yes_id}")

    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            ids = self.tokenizer.encode(token, add_special_tokens=False)
            if not ids:
                raise ConfigError(f"token {token!r} is not in the vocabulary")
            tid = ids[0]
        return int(tid)

    def user_message(self, query: str, document: str) -> str:
        """The user turn for one pair (a subclass with another prompt layout overrides this)."""
        return f"<Instruct>: {self.instruction}\n<Query>: {query}\n<Document>: {document}"

    def build_prompt(self, query: str, document: str) -> str:
        """The full prompt text for one pair (before truncation).

        The chat template, when the tokenizer has one, frames :attr:`system` and
        :meth:`user_message`; it is rendered under the tokenizer's lock (threads share it).
        """
        user = self.user_message(query, document)
        if getattr(self.tokenizer, "chat_template", None):
            with tokenizer_lock(self.tokenizer):
                text = self.tokenizer.apply_chat_template(
                    [{"role": "system", "content": self.system}, {"role": "user", "content": user}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
        else:
            text = f"{self.system}\n\n{user}\nAnswer: "
        return str(text) + self.assistant_prefix

    def fit_prompt(self, query: str, document: str) -> str:
        """The prompt for one pair, ``document`` cut so the whole fits in ``max_length`` tokens.

        The end of the prompt (where the yes/no answer is read) is never cut; trainers use this
        to build exactly the prompts the scorer sees.
        """
        prompt = self.build_prompt(query, document)
        with tokenizer_lock(self.tokenizer):  # a plain call resets a fast tokenizer's padding
            n = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if n <= self.max_length:
                return prompt
            doc_ids = self.tokenizer(document, add_special_tokens=False)["input_ids"]
            keep = max(0, len(doc_ids) - (n - self.max_length))
            short = self.tokenizer.decode(doc_ids[:keep], skip_special_tokens=True)
        return self.build_prompt(query, short)

    def _last_logits(self, enc: Any) -> Any:
        """``[B, vocab]`` logits of the last (left-padded) position only.

        The LM head runs on one position per row (``logits_to_keep=1``), not on the whole
        sequence; models whose forward does not take it get the full logits, sliced.
        """
        if self._keep_last:
            try:
                return self.model(**enc, logits_to_keep=1).logits[:, -1, :]
            except TypeError:
                self._keep_last = False
        return self.model(**enc).logits[:, -1, :]

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None) -> np.ndarray:
        """Score each (query, document) pair; returns float32 ``[len(pairs)]``."""
        items = _check_pairs(pairs)
        out = np.zeros(len(items), dtype=np.float32)
        if not items:
            return out
        prompts = [self.fit_prompt(q, d) for q, d in items]
        device = next(self.model.parameters()).device
        tok = self.tokenizer
        with padding_side(tok, "left"):
            order = length_buckets(prompts, len, batch_size or self.batch_size)
            for idx in progress(order, desc="Reranking", show=self.show_progress, unit="batch"):
                enc = tok(
                    [prompts[i] for i in idx],
                    padding=True,
                    add_special_tokens=False,
                    return_tensors="pt",
                ).to(device)
                logits = self._last_logits(enc).float()
                s = logits[:, self.yes_id] - logits[:, self.no_id]
                out[idx] = s.cpu().numpy()
        return out
