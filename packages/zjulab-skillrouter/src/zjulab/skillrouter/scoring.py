r"""The yes/no reranker fed a profile's exact prompt, reading logits at the last position only.

:class:`ProfileYesNoScorer` is zjulab-common's :class:`~zjulab.common.scorers.YesNoScorer`
with two changes: the prompt is the profile's (for the Qwen3 family the literal chat frame of
the model cards, ``\\n\\n`` separators for the SkillRouter reranker), and the forward pass asks
the model for logits at the last position only (``logits_to_keep=1``) instead of a
``[batch, length, vocab]`` tensor of which one row is used. The scores are the same; the LM head
runs once per pair instead of once per token (BENCHMARKS.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from zjulab.common.batching import length_buckets, padding_side
from zjulab.common.deps import require
from zjulab.common.progress import progress
from zjulab.common.scorers import YesNoScorer, _check_pairs
from zjulab.skillrouter.profiles import Profile

torch = require("torch", "pip install 'zjulab-skillrouter[torch]'", feature="the yes/no reranker")

__all__ = ["ProfileYesNoScorer", "last_position_logits"]


def last_position_logits(model: Any, enc: Any) -> Any:
    """``[batch, vocab]`` logits at the last position, without computing the others."""
    try:
        return model(**enc, logits_to_keep=1).logits[:, -1, :]
    except TypeError:  # a model whose forward has no logits_to_keep
        return model(**enc).logits[:, -1, :]


class ProfileYesNoScorer(YesNoScorer):
    """A yes/no reranker whose prompt is a :class:`~zjulab.skillrouter.profiles.Profile`'s.

    Args:
        model: Hub id, local directory, or a loaded causal LM.
        tokenizer: Tokenizer or its id/path.
        profile: What to feed the model.
        **kwargs: Passed to :class:`~zjulab.common.scorers.YesNoScorer` (``max_length``,
            ``batch_size``, ``device``, ``dtype``, ``show_progress``).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, profile: Profile, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", profile.reranker_max_length)
        super().__init__(
            model,
            tokenizer,
            instruction=profile.rerank_instruction,
            system=profile.rerank_system,
            assistant_prefix=profile.rerank_suffix if profile.rerank_prefix is None else "",
            **kwargs,
        )
        self.profile = profile
        self._lock = threading.Lock()  # the tokenizer's padding side is shared state

    def build_prompt(self, query: str, document: str) -> str:
        """The full prompt for one pair, before truncation."""
        p = self.profile
        user = p.rerank_user(query, document)
        if p.rerank_prefix is not None:
            return p.rerank_prefix + user + p.rerank_suffix
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": self.system}, {"role": "user", "content": user}],
                tokenize=False,
                add_generation_prompt=True,
            )
        else:
            text = f"{self.system}\n\n{user}\nAnswer: "
        return str(text) + p.rerank_suffix

    @torch.inference_mode()
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None) -> np.ndarray:
        """Score each (query, document) pair: ``logit(yes) - logit(no)`` at the last position."""
        items = _check_pairs(pairs)
        out = np.zeros(len(items), dtype=np.float32)
        if not items:
            return out
        prompts = [self.fit_prompt(q, d) for q, d in items]
        device = next(self.model.parameters()).device
        tok = self.tokenizer
        with self._lock, padding_side(tok, "left"):
            order = length_buckets(prompts, len, batch_size or self.batch_size)
            for idx in progress(order, desc="Reranking", show=self.show_progress, unit="batch"):
                enc = tok(
                    [prompts[i] for i in idx], padding=True, add_special_tokens=False, return_tensors="pt"
                ).to(device)
                logits = last_position_logits(self.model, enc).float()
                out[idx] = (logits[:, self.yes_id] - logits[:, self.no_id]).cpu().numpy()
        return out
