"""The Token-Level Relevance Discriminator: a causal-LM backbone with a per-token linear head.

Input: an instruction asking which response tokens bear on a criterion, the criterion, then the
response tokens. Output: one logit per response token; ``sigmoid(logit)`` is the relevance
``w`` in [0, 1]. Trained with binary cross-entropy on response tokens only
(:class:`~zjulab.rtt.discriminator_trainer.DiscriminatorTrainer`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zjulab.common.device import DeviceLike, DtypeLike, resolve_device, resolve_dtype
from zjulab.common.io import atomic_directory, read_json, write_json
from zjulab.rtt.errors import DiscriminatorStoreError, RTTConfigError
from zjulab.rtt.relevance import RelevanceQuery, project_weights, token_char_offsets

__all__ = ["DEFAULT_DISCRIMINATOR_ID", "DEFAULT_INSTRUCTION", "FORMAT_VERSION", "RelevanceDiscriminator"]

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = "Which tokens of the response below decide whether it meets the criterion?"
"""The instruction placed before the criterion (wording of this library, not the paper's)."""

DEFAULT_DISCRIMINATOR_ID = "Qwen/Qwen3-0.6B"
"""Backbone used when none is named: a small causal LM with a fast tokenizer."""

FORMAT_VERSION = 1
_META = "rtt_discriminator.json"


class RelevanceDiscriminator(nn.Module):
    """A causal-LM backbone (``AutoModel``) with a linear head giving one logit per token.

    Args:
        backbone: A transformers base model (no LM head) returning ``last_hidden_state``.
        tokenizer: Its fast tokenizer.
        instruction: Text placed before the criterion.
        max_length: Longest input in tokens; longer responses are cut (their cut tokens get
            relevance 0).
        base_model_id: Hub id or path of the backbone (recorded when saving a LoRA adapter).
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        *,
        instruction: str = DEFAULT_INSTRUCTION,
        max_length: int = 1024,
        base_model_id: str | None = None,
    ) -> None:
        super().__init__()
        if max_length < 8:
            raise RTTConfigError(f"max_length must be at least 8, got {max_length}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.max_length = max_length
        self.base_model_id = base_model_id
        hidden = int(_hidden_size(backbone))
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._same_vocab: dict[int, bool] = {}

    # ----- construction ------------------------------------------------------------------------
    @classmethod
    def from_causal_lm(cls, model: nn.Module, tokenizer: Any, **kwargs: Any) -> RelevanceDiscriminator:
        """Wrap the base model of a loaded causal LM (its weights are shared, not copied).

        Args:
            model: A ``*ForCausalLM`` model.
            tokenizer: Its tokenizer.
            **kwargs: Passed to the constructor.
        """
        prefix = getattr(model, "base_model_prefix", "model")
        backbone = getattr(model, prefix, None)
        if backbone is None:
            raise RTTConfigError(f"{type(model).__name__} has no base model under {prefix!r}")
        kwargs.setdefault("base_model_id", getattr(getattr(model, "config", None), "_name_or_path", None))
        return cls(backbone, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_DISCRIMINATOR_ID,
        *,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        **kwargs: Any,
    ) -> RelevanceDiscriminator:
        """Load a saved discriminator directory, or a fresh head on a hub/local backbone.

        Args:
            name_or_path: A directory written by :meth:`save`, or a backbone id/path.
            device: Where to put the model.
            dtype: Backbone weight dtype (the head stays float32).
            **kwargs: Passed to the constructor (ignored for a saved directory's stored fields).

        Raises:
            DiscriminatorStoreError: A saved directory is corrupt or of an unknown version.
            ModelNotAvailableError: The backbone is neither cached nor reachable.
        """
        path = Path(str(name_or_path))
        if (path / _META).is_file():
            return cls.load(path, device=device, dtype=dtype)
        from zjulab.common.loading import load_encoder, load_tokenizer

        backbone = load_encoder(str(name_or_path), device=device, dtype=dtype)
        tok = load_tokenizer(str(name_or_path))
        kwargs.setdefault("base_model_id", str(name_or_path))
        disc = cls(backbone, tok, **kwargs)
        return disc.to(resolve_device(device))

    def enable_lora(
        self,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.05,
        target_modules: list[str] | str = "all-linear",
    ) -> RelevanceDiscriminator:
        """Wrap the backbone in a peft LoRA adapter; only the adapter and the head then train.

        Returns:
            ``self``.
        """
        from zjulab.common.deps import require

        peft = require("peft", "pip install 'zjulab-rtt[peft]'", feature="a LoRA discriminator")
        LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.backbone = get_peft_model(self.backbone, cfg)  # type: ignore[arg-type]
        return self

    @property
    def is_lora(self) -> bool:
        """Whether the backbone carries a peft adapter."""
        return hasattr(self.backbone, "peft_config")

    @property
    def device(self) -> torch.device:
        """Device of the head."""
        return self.head.weight.device

    # ----- inputs ------------------------------------------------------------------------------
    def format_prompt(self, criterion: str) -> str:
        """The text placed before the response."""
        return f"{self.instruction}\n\nCriterion: {criterion}\n\nResponse:\n"

    def prompt_ids(self, criterion: str) -> list[int]:
        """Token ids of :meth:`format_prompt` (with the tokenizer's usual special tokens)."""
        return list(self.tokenizer(self.format_prompt(criterion))["input_ids"])

    def build_inputs(
        self, criteria: Sequence[str], response_ids: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Right-padded ``input_ids``, ``attention_mask`` and each response's (start, kept length).

        Responses are cut so that prompt + response fit ``max_length``.
        """
        rows: list[list[int]] = []
        where: list[tuple[int, int]] = []
        for crit, ids in zip(criteria, response_ids):
            p = self.prompt_ids(crit)
            room = max(self.max_length - len(p), 1)
            if len(p) >= self.max_length:
                p = p[: self.max_length - 1]
                room = 1
            kept = list(ids)[:room]
            rows.append(p + kept)
            where.append((len(p), len(kept)))
        width = max((len(r) for r in rows), default=1)
        pad = int(self.tokenizer.pad_token_id)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return input_ids, mask, where

    # ----- model -------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token relevance logits ``[B, L]`` (float32)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    @torch.no_grad()
    def predict_ids(
        self,
        criteria: Sequence[str],
        response_ids: Sequence[Sequence[int]],
        *,
        batch_size: int = 16,
        share_prefix: bool = True,
    ) -> list[torch.Tensor]:
        """Relevance ``[len(ids)]`` (CPU, float32) of each response's tokens to its criterion.

        ``response_ids`` must come from this discriminator's tokenizer. Tokens cut by
        ``max_length`` get 0.

        Args:
            criteria: One criterion per response.
            response_ids: Token ids of each response.
            batch_size: Rows per forward pass.
            share_prefix: Run the instruction + criterion prefix once per distinct criterion and
                reuse its key/value cache for every response judged against it (same result,
                less compute: a GRPO batch repeats each criterion for every response of a group).
                Falls back to full rows when the backbone returns no cache.
        """
        if len(criteria) != len(response_ids):
            raise RTTConfigError(f"got {len(criteria)} criteria for {len(response_ids)} responses")
        was_training = self.training
        self.eval()
        out: list[torch.Tensor | None] = [None] * len(criteria)
        try:
            if share_prefix:
                groups: dict[str, list[int]] = {}
                for i, c in enumerate(criteria):
                    groups.setdefault(c, []).append(i)
                for crit, idx in groups.items():
                    for start in range(0, len(idx), batch_size):
                        chunk = idx[start : start + batch_size]
                        rows = self._predict_shared(crit, [response_ids[i] for i in chunk])
                        if rows is None:
                            share_prefix = False
                            break
                        for i, w in zip(chunk, rows):
                            out[i] = w
                    if not share_prefix:
                        break
            if not share_prefix:
                for start in range(0, len(criteria), batch_size):
                    batch_crit = criteria[start : start + batch_size]
                    ids = response_ids[start : start + batch_size]
                    input_ids, mask, where = self.build_inputs(batch_crit, ids)
                    probs = torch.sigmoid(self(input_ids.to(self.device), mask.to(self.device))).float().cpu()
                    for k, (row, (s, n), full) in enumerate(zip(probs, where, ids)):
                        w = torch.zeros(len(full))
                        w[:n] = row[s : s + n]
                        out[start + k] = w
        finally:
            self.train(was_training)
        return [w if w is not None else torch.zeros(len(ids)) for w, ids in zip(out, response_ids)]

    def _cache_keyword(self) -> str:
        """``"cache"`` (transformers 5) or ``"past_key_values"`` (older): how the backbone takes a KV cache."""
        import inspect

        base: Any = self.backbone
        if hasattr(base, "get_base_model"):
            base = base.get_base_model()
        params = inspect.signature(base.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _predict_shared(
        self, criterion: str, response_ids: Sequence[Sequence[int]]
    ) -> list[torch.Tensor] | None:
        """Relevance of several responses to one criterion, the prefix computed once (None: no cache)."""
        prefix = self.prompt_ids(criterion)
        if len(prefix) >= self.max_length:
            return None
        room = self.max_length - len(prefix)
        kept = [list(ids)[:room] for ids in response_ids]
        n, p = len(kept), len(prefix)
        width = max((len(k) for k in kept), default=0)
        if width == 0:
            return [torch.zeros(len(ids)) for ids in response_ids]
        dev = self.device
        pre = self.backbone(
            input_ids=torch.tensor([prefix], device=dev),
            attention_mask=torch.ones(1, p, dtype=torch.long, device=dev),
            use_cache=True,
        )
        cache_kw = self._cache_keyword()
        cache = getattr(pre, cache_kw, None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        cache.batch_repeat_interleave(n)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, p + width), dtype=torch.long)
        mask[:, :p] = 1
        for i, k in enumerate(kept):
            ids[i, : len(k)] = torch.tensor(k, dtype=torch.long)
            mask[i, p : p + len(k)] = 1
        positions = torch.arange(p, p + width).unsqueeze(0).expand(n, -1)
        res = self.backbone(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=positions.to(dev),
            use_cache=True,
            **{cache_kw: cache},
        )
        hidden = res.last_hidden_state if hasattr(res, "last_hidden_state") else res[0]
        probs = torch.sigmoid(self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)).float().cpu()
        outs = []
        for i, (k, full) in enumerate(zip(kept, response_ids)):
            w = torch.zeros(len(full))
            w[: len(k)] = probs[i, : len(k)]
            outs.append(w)
        return outs

    def predict(
        self, criteria: Sequence[str], responses: Sequence[str], *, batch_size: int = 16
    ) -> list[tuple[list[tuple[int, int]], torch.Tensor]]:
        """Relevance of each response text to its criterion, per discriminator token.

        Returns:
            One ``(offsets, weights)`` per response: the character range of each token and its
            relevance in [0, 1].
        """
        encs = [self.tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in responses]
        weights = self.predict_ids(criteria, [e["input_ids"] for e in encs], batch_size=batch_size)
        return [([tuple(o) for o in e["offset_mapping"]], w) for e, w in zip(encs, weights)]

    def _shares_vocab(self, tokenizer: Any) -> bool:
        key = id(tokenizer)
        if key not in self._same_vocab:
            self._same_vocab[key] = (
                tokenizer is self.tokenizer or tokenizer.get_vocab() == self.tokenizer.get_vocab()
            )
        return self._same_vocab[key]

    def token_relevance(
        self, queries: Sequence[RelevanceQuery], tokenizer: Any, *, batch_size: int = 16
    ) -> list[torch.Tensor]:
        """Relevance per *policy* token (see :class:`~zjulab.rtt.relevance.RelevanceModel`).

        With the policy's vocabulary the policy token ids are read directly; otherwise the text
        is re-tokenised and the weights carried back through character offsets.
        """
        criteria = [q.rubric.text for q in queries]
        if self._shares_vocab(tokenizer):
            return self.predict_ids(criteria, [q.completion_ids for q in queries], batch_size=batch_size)
        out = []
        texts_offsets = [token_char_offsets(q.completion_ids, tokenizer) for q in queries]
        preds = self.predict(criteria, [t for t, _ in texts_offsets], batch_size=batch_size)
        for (_, target), (src, w) in zip(texts_offsets, preds):
            out.append(project_weights(src, w.tolist(), target))
        return out

    # ----- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the discriminator to a directory (atomically; a LoRA backbone saves its adapter).

        Returns:
            The directory.

        Raises:
            DiscriminatorStoreError: ``path`` is a non-empty folder that is not a saved
                discriminator (its files are never replaced).
            InputError: ``path`` exists and is not a folder.
        """
        from safetensors.torch import save_file

        target = Path(path)
        if target.is_dir() and not (target / _META).is_file() and any(target.iterdir()):
            # replacing the directory would delete files this library did not write
            raise DiscriminatorStoreError(
                f"{target} is a folder that is not empty and holds no saved discriminator; "
                "save to a new or empty folder"
            )
        with atomic_directory(target) as tmp:
            self.backbone.save_pretrained(tmp / "backbone")  # type: ignore[operator]
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                tmp / "head.safetensors",
            )
            write_json(
                tmp / _META,
                {
                    "format_version": FORMAT_VERSION,
                    "instruction": self.instruction,
                    "max_length": self.max_length,
                    "lora": self.is_lora,
                    "base_model_id": self.base_model_id,
                },
            )
        return target

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: DeviceLike = "auto", dtype: DtypeLike = "auto"
    ) -> RelevanceDiscriminator:
        """Read a directory written by :meth:`save`.

        Raises:
            DiscriminatorStoreError: Missing files, unknown version, or unreadable weights.
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        root = Path(path)
        meta_path = root / _META
        if not meta_path.is_file():
            raise DiscriminatorStoreError(f"{root} is not a saved discriminator (no {_META})")
        meta = read_json(meta_path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise DiscriminatorStoreError(
                f"{meta_path}: format_version {meta.get('format_version')!r}, this library reads {FORMAT_VERSION}"
            )
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        try:
            tok = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
            if meta.get("lora"):
                from zjulab.common.deps import require

                PeftModel = require(
                    "peft", "pip install 'zjulab-rtt[peft]'", feature="loading a LoRA discriminator"
                ).PeftModel

                base_id = meta.get("base_model_id")
                if not base_id:
                    raise DiscriminatorStoreError(f"{meta_path}: a LoRA discriminator needs base_model_id")
                from zjulab.common.loading import load_encoder

                base = load_encoder(str(base_id), device="cpu", dtype=torch_dtype)
                backbone: nn.Module = PeftModel.from_pretrained(base, str(root / "backbone"))
            else:
                backbone = AutoModel.from_pretrained(str(root / "backbone"), dtype=torch_dtype)
            head = load_file(str(root / "head.safetensors"))
        except DiscriminatorStoreError:
            raise
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise DiscriminatorStoreError(f"cannot read the discriminator in {root}: {exc}") from exc
        disc = cls(
            backbone,
            tok,
            instruction=str(meta.get("instruction", DEFAULT_INSTRUCTION)),
            max_length=int(meta.get("max_length", 1024)),
            base_model_id=meta.get("base_model_id"),
        )
        disc.head.load_state_dict(head)
        return disc.to(dev).eval()


def _hidden_size(backbone: nn.Module) -> int:
    cfg = getattr(backbone, "config", None)
    for name in ("hidden_size", "d_model", "n_embd"):
        value = getattr(cfg, name, None)
        if value is None and cfg is not None and hasattr(cfg, "get_text_config"):
            value = getattr(cfg.get_text_config(), name, None)
        if value is not None:
            return int(value)
    raise RTTConfigError(f"cannot find the hidden size of {type(backbone).__name__}")
