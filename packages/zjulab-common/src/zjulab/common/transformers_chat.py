"""A local chat model on transformers (needs ``zjulab-common[torch]``).

Imported on first use of ``zjulab.common.chat.TransformersChatModel``, so the rest of
:mod:`zjulab.common.chat` stays torch-free.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from zjulab.common.batching import length_buckets, padding_side, tokenizer_lock
from zjulab.common.chat import (
    ChatResult,
    OnError,
    Policy,
    Usage,
    _check_policy,
    cut_at_stop,
    finish,
    normalize_sampling,
    validate_conversations,
)
from zjulab.common.deps import require
from zjulab.common.device import DeviceLike, DtypeLike, resolve_device
from zjulab.common.errors import ConfigError

__all__ = ["TransformersChatModel"]

torch = require("torch", "pip install 'zjulab-common[torch]'", feature="TransformersChatModel")

# from_pretrained keywords that say where the tokenizer lives too
_TOKENIZER_KEYS = ("subfolder", "revision", "trust_remote_code", "token", "cache_dir", "local_files_only")


class _GumbelSampler:
    """A logits processor that turns greedy decoding into sampling with a local generator.

    ``argmax(logits + Gumbel noise)`` is a draw from ``softmax(logits)`` (the Gumbel-max
    trick), so with temperature/top-k/top-p warpers before it, greedy search samples exactly as
    ``do_sample=True`` would, but from ``generator`` instead of the global torch RNG.
    """

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        u = torch.rand(scores.shape, generator=self.generator, device=scores.device, dtype=torch.float32)
        gumbel = -torch.log(-torch.log(u.clamp_(1e-20, 1.0 - 1e-7)))
        return scores.float() + gumbel


class _StopInAnswer:
    r"""A stopping criterion: a row is done once its generated text holds a stop string.

    Only the tokens after the prompt are read, as vLLM and OpenAI do: transformers' own
    stop-string criterion looks at the sequence's end, prompt included, so a stop string that
    began in the prompt (``"\n\n"`` after a template ending in ``"\n"``) ended the answer
    at its first token.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        rows = input_ids[:, self.prompt_len :].tolist()
        with tokenizer_lock(self.tokenizer):
            texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        done = [any(s in text for s in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TransformersChatModel:
    """A local chat model: a causal LM with a chat template, batched generation.

    Generation is serialised by a lock, so one instance is safe to share between threads.
    Sampling (``temperature > 0``) draws from a ``torch.Generator`` of its own, seeded with
    ``seed``: the global torch RNG is neither used nor changed.

    Args:
        model: Hub id, local directory, or an already loaded ``PreTrainedModel``.
        tokenizer: Tokenizer (or its id/path); defaults to the model's, loaded with the same
            ``subfolder``/``revision``/``trust_remote_code`` as the model.
        device: Device for the model (``"auto"`` picks CUDA, then MPS, then CPU).
        dtype: Weight dtype (``"auto"``: bf16 on recent GPUs, fp32 on CPU). ``torch_dtype=``,
            as model cards spell it (``"bfloat16"``, ``torch.float16``, ``"auto"``), is the same.
        adapter: Optional peft adapter applied on load.
        batch_size: Conversations generated together.
        max_new_tokens: Default length limit of an answer.
        chat_template: A Jinja chat template to use instead of the tokenizer's.
        chat_template_kwargs: Extra keywords for ``apply_chat_template`` (for example
            ``{"enable_thinking": False}`` for Qwen3).
        on_truncation, on_content_filter, on_empty, on_error: As for
            :class:`~zjulab.common.chat.OpenAIChatModel` (``generate`` only).
        **load_kwargs: Passed to :func:`~zjulab.common.loading.load_causal_lm`.

    The model is loaded on first use, so constructing one is free.
    """

    _ACCEPTED = (
        "max_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "stop",
        "seed",
        "n",
    )

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        adapter: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        on_truncation: Policy = "warn",
        on_content_filter: Policy = "warn",
        on_empty: Policy = "warn",
        on_error: OnError = "raise",
        **load_kwargs: Any,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if "torch_dtype" in load_kwargs:
            td = load_kwargs.pop("torch_dtype")
            if dtype not in ("auto", None) and str(dtype) != str(td):
                raise ConfigError(f"dtype={dtype!r} and torch_dtype={td!r} disagree; pass one")
            dtype = "checkpoint" if td == "auto" else td  # a card's "auto" is the checkpoint's dtype
        if "dtype" in load_kwargs:
            raise ConfigError("dtype given twice")
        self._model = model if not isinstance(model, (str, os.PathLike)) else None
        self._tokenizer = tokenizer if not isinstance(tokenizer, (str, os.PathLike)) else None
        self._model_src = None if self._model is not None else str(model)
        self._tok_src = str(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else None
        self.model_id = self._model_src or str(
            getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        )
        self.device = device
        self.dtype = dtype
        self.adapter = adapter
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.chat_template = chat_template
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.on_truncation = _check_policy("on_truncation", on_truncation)
        self.on_content_filter = _check_policy("on_content_filter", on_content_filter)
        self.on_empty = _check_policy("on_empty", on_empty)
        self.on_error = _check_policy("on_error", on_error, ("raise", "return"))
        self.load_kwargs = load_kwargs
        self.usage = Usage()
        self._load_lock = threading.RLock()
        self._generate_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersChatModel(model={self.model_id!r}, device={self.device!r}, dtype={self.dtype!r})"

    @property
    def model(self) -> Any:
        """The underlying ``PreTrainedModel`` (loaded on first access)."""
        if self._model is None:
            from zjulab.common.loading import load_causal_lm

            with self._load_lock:
                if self._model is None:
                    self._model = load_causal_lm(
                        self._model_src or "",
                        device=self.device,
                        dtype=self.dtype,
                        adapter=self.adapter,
                        **self.load_kwargs,
                    )
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (loaded on first access, from the model's subfolder/revision)."""
        if self._tokenizer is None:
            from zjulab.common.loading import load_tokenizer

            with self._load_lock:
                if self._tokenizer is None:
                    src = self._tok_src or self._model_src
                    if src is None:
                        src = getattr(self.model.config, "_name_or_path", None)
                    if not src:
                        raise ConfigError(
                            f"{self.model_id}: pass the tokenizer; the model object names no source"
                        )
                    # the model's own location keywords apply to its tokenizer, not to another one
                    kw = {k: self.load_kwargs[k] for k in _TOKENIZER_KEYS if k in self.load_kwargs}
                    if self._tok_src is not None:
                        kw = {k: v for k, v in kw.items() if k in ("trust_remote_code", "token", "cache_dir")}
                    tok = load_tokenizer(str(src), **kw)
                    if tok.pad_token is None:
                        tok.pad_token = tok.eos_token
                    self._tokenizer = tok
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def render(self, conversation: Any) -> str:
        """The prompt text the chat template makes of ``conversation`` (generation prompt added).

        Raises:
            ConfigError: The tokenizer has no chat template and none was given.
        """
        tok = self.tokenizer
        template = self.chat_template or getattr(tok, "chat_template", None)
        if not template:
            raise ConfigError(
                f"the tokenizer of {self.model_id!r} has no chat template (a base model?); pass "
                "chat_template=... or use an instruction-tuned checkpoint"
            )
        text = tok.apply_chat_template(
            list(conversation),
            tokenize=False,
            add_generation_prompt=True,
            chat_template=template,
            **self.chat_template_kwargs,
        )
        return str(text)

    def generate(
        self, conversations: Sequence[Any], *, on_error: OnError | None = None, **sampling: Any
    ) -> list[str]:
        """Answer each conversation (see :class:`~zjulab.common.protocols.ChatModel`).

        Keywords: ``max_new_tokens``/``max_tokens``, ``temperature`` (0 = greedy), ``top_p``,
        ``top_k``, ``min_p``, ``repetition_penalty``, ``stop`` (generation stops there; the
        answer is cut before it), ``seed``. Anything else raises :class:`ConfigError`.

        Raises:
            InputError: A malformed conversation.
            ConfigError: Invalid or unknown sampling options, or no chat template.
            IncompleteAnswerError: Under a ``"raise"`` finish policy.
        """
        results = self.generate_results(conversations, **sampling)
        return finish(
            results,
            on_error=_check_policy("on_error", on_error or self.on_error, ("raise", "return")),
            on_truncation=self.on_truncation,
            on_content_filter=self.on_content_filter,
            on_empty=self.on_empty,
            source=f"model {self.model_id!r}",
        )

    def generate_results(self, conversations: Sequence[Any], **sampling: Any) -> list[ChatResult]:
        """Answer each conversation, saying how each answer ended and how many tokens it used.

        ``finish_reason`` is ``"stop"`` (end of turn or a stop string) or ``"length"``;
        ``completion_tokens`` counts the tokens generated up to and including the end-of-turn
        token or the stop string, not the padding after it.
        """
        validate_conversations(conversations)
        opts = normalize_sampling(sampling, self.max_new_tokens, self._ACCEPTED)
        if not conversations:
            return []
        with self._generate_lock, torch.inference_mode():
            return self._generate(conversations, opts)

    def _generate(self, conversations: Sequence[Any], opts: dict[str, Any]) -> list[ChatResult]:
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        tok, model = self.tokenizer, self.model
        prompts = [self.render(c) for c in conversations]
        with tokenizer_lock(tok):  # a plain call resets a fast tokenizer's padding
            enc_lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        device = resolve_device(next(model.parameters()).device)
        max_new = int(opts["max_new_tokens"])
        stop = opts.get("stop") or []
        processors = LogitsProcessorList()
        if opts.get("repetition_penalty") not in (None, 1.0):
            processors.append(RepetitionPenaltyLogitsProcessor(float(opts["repetition_penalty"])))
        generator = None
        if opts["temperature"] > 0:
            generator = torch.Generator(device=device)
            if opts.get("seed") is not None:
                generator.manual_seed(int(opts["seed"]))
            else:
                generator.seed()
            processors.append(TemperatureLogitsWarper(float(opts["temperature"])))
            if opts.get("top_k"):
                processors.append(TopKLogitsWarper(int(opts["top_k"])))
            if opts.get("top_p") is not None and float(opts["top_p"]) < 1.0:
                processors.append(TopPLogitsWarper(float(opts["top_p"])))
            if opts.get("min_p"):
                processors.append(MinPLogitsWarper(float(opts["min_p"])))
            processors.append(_GumbelSampler(generator))
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "logits_processor": processors,
        }
        gen_cfg = getattr(model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if eos is None:
            eos = tok.eos_token_id
        eos_ids = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos_ids), 0)
        out: list[ChatResult] = [ChatResult() for _ in prompts]
        with padding_side(tok, "left"):
            for idx in length_buckets(list(range(len(prompts))), lambda i: enc_lens[i], self.batch_size):
                batch = tok(
                    [prompts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(device)
                if stop:
                    from transformers import StoppingCriteriaList

                    gen_kwargs["stopping_criteria"] = StoppingCriteriaList(
                        [_StopInAnswer(tok, stop, batch["input_ids"].shape[1])]
                    )
                gen = model.generate(**batch, pad_token_id=pad_id, **gen_kwargs)
                new = gen[:, batch["input_ids"].shape[1] :].tolist()
                for row, i in zip(new, idx):
                    out[i] = self._result(row, tok, eos_ids, pad_id, stop, max_new, enc_lens[i])
                self.usage.add(
                    len(idx), sum(enc_lens[i] for i in idx), sum(out[i].completion_tokens for i in idx)
                )
        return out

    @staticmethod
    def _result(
        row: list[int],
        tok: Any,
        eos_ids: set[int],
        pad_id: int,
        stop: Sequence[str],
        max_new: int,
        prompt: int,
    ) -> ChatResult:
        """Tokens generated (through the end-of-turn token, if any), text and finish reason."""
        n = len(row)
        ended = False
        for j, t in enumerate(row):
            if t in eos_ids:
                n, ended = j + 1, True
                break
        body = row[:n]
        if not ended and pad_id not in eos_ids:
            # a row that stopped early (stop string) is padded after its last token
            while body and body[-1] == pad_id and len(body) > 0:
                body.pop()
            n = len(body)
        text = tok.decode(body, skip_special_tokens=True)
        cut, hit = cut_at_stop(text, stop)
        if hit:
            # count the tokens through the one that completed the stop string
            for j in range(1, len(body) + 1):
                if any(s in tok.decode(body[:j], skip_special_tokens=True) for s in stop):
                    n = j
                    break
        reason = "stop" if ended or hit or n < max_new else "length"
        return ChatResult(cut.strip(), reason, prompt, n)
