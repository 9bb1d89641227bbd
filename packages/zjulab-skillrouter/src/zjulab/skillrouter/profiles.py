r"""Model profiles: exactly what each family of encoder/reranker is fed.

A profile fixes the query instruction, the reranker prompt (instruction, separators, the chat
frame and the empty ``<think>`` block), the character budgets and the token limits. It is stored
in a saved index (inside the router config) and used by routing, training and evaluation alike,
so a model sees at inference the prompt it was trained on.

* ``"skillrouter"`` — the released ``pipizhao/SkillRouter-Embedding-0.6B`` /
  ``-Reranker-0.6B``, as in the authors' evaluation code (``src/common.py`` and
  ``src/run_open_model_eval.py``): the coding-task query instruction, the reranker prompt with
  ``\\n\\n`` between its parts, skill text ``name | description[:500] | body[:8000]`` for the
  encoder at 4,096 tokens, ``name | description[:500] | body[:2000]`` for the reranker at 4,096
  tokens, queries cut to 2,000 characters.
* ``"qwen3"`` — the base ``Qwen/Qwen3-Embedding-0.6B`` / ``Qwen/Qwen3-Reranker-0.6B`` as their
  model cards use them (web-search instruction, ``\\n`` separators, 8,192 tokens), with the
  authors' skill-text budgets.
* ``"embedded"`` — the offline MiniLM-L6 encoder (no instruction, 256 tokens, the paper's
  300/2500 budgets) and SmolLM2-135M rendered with its own chat template.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from zjulab.common.errors import ConfigError

__all__ = ["PROFILES", "Profile", "get_profile"]

QWEN3_RERANK_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
QWEN3_PREFIX = "<|im_start|>system\n" + QWEN3_RERANK_SYSTEM + "<|im_end|>\n<|im_start|>user\n"
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class Profile:
    """What one model family is fed.

    Args:
        name: Profile name.
        query_prompt: Put before every query for the encoder.
        rerank_instruction: The ``<Instruct>:`` line of the yes/no reranker.
        rerank_sep: Separator between ``<Instruct>``, ``<Query>`` and ``<Document>``.
        rerank_prefix: Literal text before the user message (the chat frame); ``None``
            renders the tokenizer's chat template with :attr:`rerank_system` instead.
        rerank_suffix: Literal text after it, ending where the yes/no answer is read.
        rerank_system: System message when the chat template is used.
        index_desc_max: Description characters in the encoder/BM25 text.
        index_body_max: Body characters in the encoder/BM25 text.
        encoder_max_length: Encoder token limit.
        rerank_desc_max: Description characters in the reranker document.
        rerank_body_max: Body characters in the reranker document.
        reranker_max_length: Reranker prompt token limit.
        query_max_chars: Query characters kept.
    """

    name: str
    query_prompt: str
    rerank_instruction: str
    rerank_sep: str
    rerank_prefix: str | None
    rerank_suffix: str
    rerank_system: str
    index_desc_max: int
    index_body_max: int
    encoder_max_length: int
    rerank_desc_max: int
    rerank_body_max: int
    reranker_max_length: int
    query_max_chars: int

    def rerank_user(self, query: str, document: str) -> str:
        """The user message of the reranker prompt."""
        s = self.rerank_sep
        return f"<Instruct>: {self.rerank_instruction}{s}<Query>: {query}{s}<Document>: {document}"

    def to_dict(self) -> dict[str, object]:
        """The profile as a dict."""
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "skillrouter": Profile(
        name="skillrouter",
        query_prompt=(
            "Instruct: Given a coding task description, retrieve the most relevant skill document "
            "that would help an agent complete the task\nQuery:"
        ),
        rerank_instruction=(
            "Given a coding task description, judge whether the skill document is relevant and "
            "useful for completing the task"
        ),
        rerank_sep="\n\n",
        rerank_prefix=QWEN3_PREFIX,
        rerank_suffix=QWEN3_SUFFIX,
        rerank_system=QWEN3_RERANK_SYSTEM,
        index_desc_max=500,
        index_body_max=8000,
        encoder_max_length=4096,
        rerank_desc_max=500,
        rerank_body_max=2000,
        reranker_max_length=4096,
        query_max_chars=2000,
    ),
    "qwen3": Profile(
        name="qwen3",
        query_prompt="Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
        rerank_instruction="Given a web search query, retrieve relevant passages that answer the query",
        rerank_sep="\n",
        rerank_prefix=QWEN3_PREFIX,
        rerank_suffix=QWEN3_SUFFIX,
        rerank_system=QWEN3_RERANK_SYSTEM,
        index_desc_max=500,
        index_body_max=8000,
        encoder_max_length=8192,
        rerank_desc_max=500,
        rerank_body_max=2000,
        reranker_max_length=8192,
        query_max_chars=2000,
    ),
    "embedded": Profile(
        name="embedded",
        query_prompt="",
        rerank_instruction=(
            "Given a task an agent must carry out, judge whether the skill document is relevant "
            "and useful for completing it"
        ),
        rerank_sep="\n",
        rerank_prefix=None,
        rerank_suffix="",
        rerank_system=QWEN3_RERANK_SYSTEM,
        index_desc_max=300,
        index_body_max=2500,
        encoder_max_length=256,
        rerank_desc_max=500,
        rerank_body_max=2000,
        reranker_max_length=256,
        query_max_chars=2000,
    ),
}
"""The known profiles by name."""


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        ConfigError: Unknown name.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}") from None
