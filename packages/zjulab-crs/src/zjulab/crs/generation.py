"""Task 4, pre-sales dialogue generation: write the assistant's next utterance.

:class:`ResponseGenerator` fine-tunes a causal LM (with a peft LoRA adapter by default) on
prompts that hold the category, the needs elicited so far, the attributes the response should
ask about, the recommended item's knowledge and the recent turns -- the conditioning of the
paper's task and of the LLM-CRS prompts -- with the loss on the response tokens only.
Decoding is greedy. :class:`RetrievalResponder` is the baseline: it returns the training
response whose prompt is most similar (cosine of any
:class:`~zjulab.common.protocols.TextEncoder`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from zjulab.common.batching import padding_side
from zjulab.common.protocols import TextEncoder
from zjulab.crs.backbone import load_backbone
from zjulab.crs.checkpoint import read_checkpoint, save_checkpoint
from zjulab.crs.config import GeneratorConfig
from zjulab.crs.errors import NotTrainedError
from zjulab.crs.samples import GenerationExample, render_context
from zjulab.crs.task_scores import generation_scores
from zjulab.crs.training import TrainHistory, module_device, seeded_init, train_loop

__all__ = ["ResponseGenerator", "RetrievalResponder", "generation_prompt"]

logger = logging.getLogger(__name__)


def generation_prompt(example: GenerationExample, max_turns: int = 4) -> str:
    """The conditioning text of one example, ending with ``assistant:``.

    Every value of a multi-valued need is listed (``品类: 洗面奶; 品类: 水乳; 品类: 套装``). The
    attributes to ask about are named by key only, as in the authors' response samples (an
    ``[elicit]`` node holding the asked keys): the values a question offers (``肤质`` as 偏油 or
    偏干, :attr:`GenerationExample.ask_values`) are words of the gold response itself and never
    enter the prompt.
    """
    needs = "; ".join(f"{k}: {v}" for k, v in example.needs) or "none"
    ask = ", ".join(example.ask) or "none"
    item = example.item.text() if example.item is not None and example.item.knowledge else "none"
    return (
        f"category: {example.category}\nneeds: {needs}\nask about: {ask}\nitem: {item}\n"
        f"{render_context(example.context, max_turns)}\nassistant:"
    )


class ResponseGenerator:
    """Trainable causal-LM response generator (LoRA by default).

    Args:
        config: Settings.
        model: A loaded causal LM (trained in place; wrapped with LoRA when ``use_lora``)
            instead of ``config.model_name_or_path``.
        tokenizer: Its tokenizer.
    """

    task = "generation"

    def __init__(
        self, config: GeneratorConfig | None = None, *, model: Any = None, tokenizer: Any = None
    ) -> None:
        self.config = config or GeneratorConfig()
        self._model_src = model if model is not None else self.config.model_name_or_path
        self._tok_src = tokenizer
        self.model: Any = None
        self.tokenizer: Any = None

    def _ensure(self) -> Any:
        if self.model is None:
            cfg = self.config
            self.model, self.tokenizer = load_backbone(
                self._model_src, self._tok_src, kind="causal", device=cfg.device, dtype=cfg.dtype
            )
        return self.model

    def _wrap_lora(self) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        if isinstance(self.model, PeftModel) or not self.config.use_lora:
            return
        targets: Any = self.config.target_modules
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        with seeded_init(self.config.seed):  # LoRA's A matrices are random
            self.model = get_peft_model(self.model, lora)

    def _features(self, batch: Sequence[GenerationExample]) -> dict[str, torch.Tensor]:
        tok, cfg = self.tokenizer, self.config
        eos = tok.eos_token or ""
        rows = []
        for e in batch:
            resp = tok(" " + e.response + eos, add_special_tokens=False)["input_ids"][: cfg.max_length // 2]
            prompt = tok(generation_prompt(e, cfg.max_turns), add_special_tokens=False)["input_ids"]
            prompt = prompt[-(cfg.max_length - len(resp)) :]
            rows.append((prompt + resp, [-100] * len(prompt) + resp))
        width = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (x, y) in enumerate(rows):
            ids[i, : len(x)] = torch.tensor(x)
            labels[i, : len(y)] = torch.tensor(y)
            mask[i, : len(x)] = 1
        dev = module_device(self.model)
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "labels": labels.to(dev)}

    def fit(self, examples: Sequence[GenerationExample]) -> TrainHistory:
        """Fine-tune on ``examples`` (response tokens only contribute to the loss)."""
        self._ensure()
        self._wrap_lora()

        def loss_fn(batch: list[GenerationExample]) -> torch.Tensor:
            return self.model(**self._features(batch)).loss

        return train_loop(self.model, examples, loss_fn, self.config, desc="generator")

    @torch.no_grad()
    def generate(self, examples: Sequence[GenerationExample]) -> list[str]:
        """Greedy responses (cut at the first line break)."""
        model = self._ensure()
        model.eval()
        tok, cfg = self.tokenizer, self.config
        out: list[str] = []
        with padding_side(tok, "left", truncation="left"):
            for i in range(0, len(examples), cfg.batch_size):
                chunk = examples[i : i + cfg.batch_size]
                enc = tok(
                    [generation_prompt(e, cfg.max_turns) for e in chunk],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=cfg.max_length,
                    add_special_tokens=False,
                ).to(module_device(model))
                gen = model.generate(
                    **enc,
                    max_new_tokens=cfg.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                    eos_token_id=tok.eos_token_id,
                )
                texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                out += [t.strip().split("\n")[0].strip() for t in texts]
        return out

    def evaluate(
        self, examples: Sequence[GenerationExample], *, tokenize: str | None = None
    ) -> dict[str, float]:
        """BLEU-1..4 and Distinct-1..4 on ``examples``."""
        return generation_scores(examples, self.generate(examples), tokenize=tokenize)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint (a LoRA adapter is merged into the weights first)."""
        if self.model is None:
            raise NotTrainedError("nothing to save: fit() first")
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            self.model = model
        save_checkpoint(path, task=self.task, config=self.config, backbone=model, tokenizer=self.tokenizer)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> ResponseGenerator:
        """Load a checkpoint written by :meth:`save`."""
        cfg_dict, _, backbone, _ = read_checkpoint(path, cls.task)
        if device is not None:
            cfg_dict["device"] = device
        obj = cls(GeneratorConfig(**cfg_dict), model=str(backbone), tokenizer=str(backbone))
        obj._ensure().eval()
        return obj


class RetrievalResponder:
    """Baseline: answer with the response of the most similar training prompt.

    Args:
        encoder: Any :class:`~zjulab.common.protocols.TextEncoder`; defaults to a 512-d
            :class:`~zjulab.common.testing.HashingEncoder` (lexical, no model).
        max_turns: Turns of context in the compared prompts.
    """

    task = "generation"

    def __init__(self, encoder: TextEncoder | None = None, max_turns: int = 4) -> None:
        if encoder is None:
            from zjulab.common.testing import HashingEncoder

            encoder = HashingEncoder(512)
        self.encoder = encoder
        self.max_turns = max_turns
        self._keys: np.ndarray | None = None
        self._responses: list[str] = []

    def fit(self, examples: Sequence[GenerationExample]) -> RetrievalResponder:
        """Index the training prompts."""
        self._keys = self.encoder.encode([generation_prompt(e, self.max_turns) for e in examples])
        self._responses = [e.response for e in examples]
        return self

    def generate(self, examples: Sequence[GenerationExample]) -> list[str]:
        """The nearest training response of each example (ties: the smallest response text)."""
        if self._keys is None or not self._responses:
            raise NotTrainedError("RetrievalResponder.generate() called before fit()")
        if not examples:
            return []
        q = self.encoder.encode([generation_prompt(e, self.max_turns) for e in examples])
        sims = q @ self._keys.T
        out = []
        for row in sims:
            # ties (equal similarity) go to the smallest response text, not to file order
            top = np.flatnonzero(row >= row.max() - 1e-9)
            out.append(min(self._responses[int(i)] for i in top))
        return out

    def evaluate(
        self, examples: Sequence[GenerationExample], *, tokenize: str | None = None
    ) -> dict[str, float]:
        """BLEU-1..4 and Distinct-1..4 on ``examples``."""
        return generation_scores(examples, self.generate(examples), tokenize=tokenize)
