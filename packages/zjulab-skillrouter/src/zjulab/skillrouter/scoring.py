r"""The yes/no reranker fed a profile's exact prompt.

:class:`ProfileYesNoScorer` is zjulab-common's :class:`~zjulab.common.scorers.YesNoScorer` with
one change, the prompt: the profile's (for the Qwen3 family the literal chat frame of the model
cards, ``\\n\\n`` separators for the SkillRouter reranker) instead of common's fixed layout.
Everything else is common's: the document cut to fit ``max_length``, left padding under the
tokenizer's lock (threads sharing a tokenizer take turns), and the LM head run at the last
position only (``logits_to_keep=1``, with a fallback for models that do not take it). The
chat template is rendered under the same lock: every call this module makes on the shared
tokenizer holds :func:`~zjulab.common.batching.tokenizer_lock`.
"""

from __future__ import annotations

from typing import Any

from zjulab.common.deps import require
from zjulab.skillrouter.profiles import Profile

require("torch", "pip install 'zjulab-skillrouter[torch]'", feature="the yes/no reranker")

from zjulab.common.scorers import YesNoScorer  # noqa: E402  (after the typed torch check)

__all__ = ["ProfileYesNoScorer"]


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

    def user_message(self, query: str, document: str) -> str:
        """The profile's user turn for one pair."""
        return self.profile.rerank_user(query, document)

    def build_prompt(self, query: str, document: str) -> str:
        """The full prompt for one pair, before truncation.

        A profile with a literal frame (``rerank_prefix``) is used as written; otherwise
        common's chat-template framing of :meth:`user_message`, then the profile's suffix.
        """
        p = self.profile
        if p.rerank_prefix is not None:
            return p.rerank_prefix + self.user_message(query, document) + p.rerank_suffix
        return super().build_prompt(query, document)
