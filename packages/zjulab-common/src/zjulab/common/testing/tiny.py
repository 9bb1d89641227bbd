"""Tiny random-weight transformers models and a BPE tokenizer trained on the fly."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "save_tiny",
    "tiny_causal_lm",
    "tiny_cross_encoder",
    "tiny_encoder",
    "tiny_tokenizer",
]

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, the layout of Qwen and SmolLM2 chat models."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]

_CORPUS = """
yes no maybe true false the a an of to in on for with and or not is are was were be been
user assistant system question answer query document relevant skill task tool memory fact
select from where group by order having limit join count sum avg min max distinct as asc desc
table column name id value year age city country price color red green blue yellow black white
The quick brown fox jumps over the lazy dog. A user asks a question and the assistant answers.
Memory stores facts about people, places, events and dates. Skills describe tools and their use.
Write a short poem about the sea in three lines. Reply in JSON with keys name and value.
SELECT name FROM singer WHERE age > 30 ORDER BY name DESC LIMIT 5
SELECT count(*) FROM concert GROUP BY year HAVING count(*) > 1
Recommend a phone with a large battery and a good camera under 3000 yuan.
{"name": "value", "items": [1, 2, 3], "ok": true}
0 1 2 3 4 5 6 7 8 9 10 100 2024 2025
"""


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [ln for ln in _CORPUS.strip().splitlines() if ln.strip()] * 3
    lines += ["yes no", "no yes"] * 50  # make the two answer words single tokens
    tok.train_from_iterator(lines, trainer=trainer)
    return str(tok.to_str())


def tiny_tokenizer(kind: Literal["causal", "encoder"] = "causal", vocab_size: int = 512) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on a built-in corpus.

    Byte-level, so any text encodes without unknown tokens. ``"causal"`` gets a ChatML chat
    template, ``<|im_end|>`` as EOS and ``<pad>`` as padding; ``"encoder"`` wraps inputs as
    ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` with ``[MASK]`` for masked-LM work.
    ``yes`` and ``no`` are single tokens.

    Args:
        kind: Which special-token layout to use.
        vocab_size: BPE vocabulary size (including the byte alphabet and specials).
    """
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_tokenizer_json(vocab_size))
    if kind == "encoder":
        cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            cls_token="[CLS]",
            sep_token="[SEP]",
            pad_token="<pad>",
            mask_token="[MASK]",
            unk_token="[UNK]",
            model_max_length=512,
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="[UNK]",
        model_max_length=512,
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


def _build(seed: int, factory: Any) -> Any:
    """Build a model with weights drawn from ``seed``, leaving the global torch RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def unprintable_token_ids(tok: Any) -> list[int]:
    """Ids of tokens that decode to nothing readable: specials but EOS, whitespace, broken bytes."""
    bad = []
    for i in range(len(tok)):
        if i == tok.eos_token_id:
            continue
        text = tok.decode([i])
        if i in tok.all_special_ids or not text.strip() or "\ufffd" in text or not text.isprintable():
            bad.append(i)
    return bad


def tiny_causal_lm(seed: int = 0, *, hidden_size: int = 32, num_layers: int = 2) -> tuple[Any, Any]:
    """A Qwen2-architecture causal LM with random weights and its tokenizer.

    The weights are drawn wide (``initializer_range=0.3``) so that the greedy answer depends on
    the prompt, and the generation config suppresses the tokens that decode to nothing readable
    (special tokens other than ``<|im_end|>``, whitespace-only and partial-UTF-8 byte tokens):
    different prompts get different non-empty answers, the same prompt the same answer. It
    rarely emits ``<|im_end|>``, so answers usually end at the token limit
    (``finish_reason == "length"``).

    Returns:
        ``(model, tokenizer)``; the model is in eval mode on CPU, float32.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_tokenizer("causal")
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.3,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = _build(seed, lambda: Qwen2ForCausalLM(config).eval())
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.suppress_tokens = unprintable_token_ids(tok)
    return model, tok


def _bert_config(tok: Any, hidden_size: int, num_layers: int, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def tiny_encoder(seed: int = 0, *, hidden_size: int = 32, num_layers: int = 2) -> tuple[Any, Any]:
    """A BERT-architecture encoder (``BertModel``) with random weights and its tokenizer."""
    from transformers import BertModel

    tok = tiny_tokenizer("encoder")
    return _build(seed, lambda: BertModel(_bert_config(tok, hidden_size, num_layers)).eval()), tok


def tiny_cross_encoder(
    seed: int = 0, *, hidden_size: int = 32, num_layers: int = 2, num_labels: int = 1
) -> tuple[Any, Any]:
    """A BERT sequence-classification model (one logit by default) and its tokenizer."""
    from transformers import BertForSequenceClassification

    tok = tiny_tokenizer("encoder")
    config = _bert_config(tok, hidden_size, num_layers, num_labels=num_labels)
    return _build(seed, lambda: BertForSequenceClassification(config).eval()), tok


def save_tiny(model: Any, tokenizer: Any, path: str | os.PathLike[str]) -> Path:
    """Save a model and tokenizer with ``save_pretrained`` so they load by path."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
