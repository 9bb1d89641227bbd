"""Bimodal NL–SQL pretraining: continued masked-LM training on paired utterance/SQL text.

Each example is ``[CLS] utterance (+ history) [SEP] SQL [SEP]``. Masks are drawn separately on the
two sides — a configurable share of the masked tokens comes from the SQL — so the model learns to
fill SQL tokens from the question and question words from the SQL, which aligns the two
modalities before the encoder is used by the parser. Masked positions follow BERT's recipe: 80 %
``[MASK]``, 10 % a random token, 10 % unchanged.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zjulab.hiesql._torch import torch  # first: a typed error without the [torch] extra

# isort: split

from zjulab.common.device import resolve_device
from zjulab.common.seeding import seed_everything
from zjulab.hiesql.config import ContextMode, PretrainConfig
from zjulab.hiesql.data import Interaction
from zjulab.hiesql.errors import HieSqlConfigError

logger = logging.getLogger(__name__)

__all__ = ["BimodalPretrainer", "MaskedExample", "paired_texts"]


def paired_texts(
    interactions: Sequence[Interaction], context: ContextMode = "history"
) -> list[tuple[str, str]]:
    """``(natural-language side, SQL side)`` pairs from interactions with gold SQL.

    Args:
        interactions: Interactions whose turns carry SQL.
        context: ``"utterance"`` pairs each utterance with its SQL; ``"history"`` and
            ``"history_sql"`` prepend the earlier utterances (most recent first) to the NL side.

    Returns:
        The pairs (turns without SQL are skipped).
    """
    out: list[tuple[str, str]] = []
    for inter in interactions:
        for k, turn in enumerate(inter.turns):
            if not turn.sql:
                continue
            nl = turn.utterance
            if context != "utterance" and k:
                nl = " | ".join([turn.utterance, *[t.utterance for t in reversed(inter.turns[:k])]])
            out.append((nl, turn.sql))
    return out


@dataclass
class MaskedExample:
    """One masked pair.

    Args:
        input_ids: Ids with masks applied.
        labels: Original ids at masked positions, -100 elsewhere.
        token_type_ids: 0 on the NL side, 1 on the SQL side.
    """

    input_ids: list[int]
    labels: list[int]
    token_type_ids: list[int]


class BimodalPretrainer:
    """Continued masked-LM pretraining of an encoder on NL/SQL pairs.

    Args:
        model: An ``AutoModelForMaskedLM``-style module (returns ``.loss`` given ``labels``).
        tokenizer: Its tokenizer (needs a mask token).
        config: Pretraining settings.
        device: Where to train.
    """

    def __init__(
        self, model: Any, tokenizer: Any, config: PretrainConfig | None = None, device: str = "auto"
    ) -> None:
        if tokenizer.mask_token_id is None:
            raise HieSqlConfigError("bimodal pretraining needs a tokenizer with a mask token")
        self.config = config or PretrainConfig()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self._rng = random.Random(self.config.seed)
        self._special = set(tokenizer.all_special_ids)

    def mask_pair(self, nl: str, sql: str) -> MaskedExample:
        """Tokenize and mask one pair (deterministic given the trainer's seed and call order)."""
        enc = self.tokenizer(nl, sql, truncation=True, max_length=self.config.max_length)
        ids = list(enc["input_ids"])
        types = list(enc.get("token_type_ids") or self._types_from_sep(ids))
        nl_pos = [i for i, t in enumerate(ids) if t not in self._special and types[i] == 0]
        sql_pos = [i for i, t in enumerate(ids) if t not in self._special and types[i] == 1]
        n_mask = max(1, round(self.config.mask_prob * (len(nl_pos) + len(sql_pos))))
        n_sql = min(len(sql_pos), round(n_mask * self.config.sql_mask_share))
        n_nl = min(len(nl_pos), n_mask - n_sql)
        chosen = self._rng.sample(sql_pos, n_sql) + self._rng.sample(nl_pos, n_nl)
        labels = [-100] * len(ids)
        vocab = len(self.tokenizer)
        for i in chosen:
            labels[i] = ids[i]
            r = self._rng.random()
            if r < 0.8:
                ids[i] = int(self.tokenizer.mask_token_id)
            elif r < 0.9:
                ids[i] = self._rng.randrange(vocab)
        return MaskedExample(ids, labels, types)

    def _types_from_sep(self, ids: list[int]) -> list[int]:
        sep = self.tokenizer.sep_token_id
        out, side = [], 0
        for t in ids:
            out.append(side)
            if t == sep:
                side = 1
        return out

    def _batch(self, examples: Sequence[MaskedExample]) -> dict[str, torch.Tensor]:
        n = max(len(e.input_ids) for e in examples)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(examples), n), pad, dtype=torch.long)
        lab = torch.full((len(examples), n), -100, dtype=torch.long)
        typ = torch.zeros((len(examples), n), dtype=torch.long)
        mask = torch.zeros((len(examples), n), dtype=torch.long)
        for i, e in enumerate(examples):
            m = len(e.input_ids)
            ids[i, :m] = torch.tensor(e.input_ids)
            lab[i, :m] = torch.tensor(e.labels)
            typ[i, :m] = torch.tensor(e.token_type_ids)
            mask[i, :m] = 1
        out = {"input_ids": ids, "labels": lab, "attention_mask": mask}
        if "token_type_ids" in self._forward_args():
            out["token_type_ids"] = typ
        return {k: v.to(self.device) for k, v in out.items()}

    def _forward_args(self) -> set[str]:
        import inspect

        return set(inspect.signature(self.model.forward).parameters)

    def train(self, pairs: Sequence[tuple[str, str]], steps: int | None = None) -> list[float]:
        """Run masked-LM steps over the pairs (cycling through them, reshuffled each pass).

        Args:
            pairs: ``(NL, SQL)`` pairs, e.g. from :func:`paired_texts`.
            steps: Overrides ``config.steps``.

        Returns:
            The loss of every step.

        Raises:
            HieSqlConfigError: When ``pairs`` is empty.
        """
        if not pairs:
            raise HieSqlConfigError("bimodal pretraining needs at least one (utterance, SQL) pair")
        seed_everything(self.config.seed)
        total = steps or self.config.steps
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr)
        self.model.train()
        order: list[int] = []
        losses: list[float] = []
        for step in range(total):
            batch = []
            for _ in range(self.config.batch_size):
                if not order:
                    order = list(range(len(pairs)))
                    self._rng.shuffle(order)
                batch.append(self.mask_pair(*pairs[order.pop()]))
            out = self.model(**self._batch(batch))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(out.loss.detach()))
            if step % 50 == 0:
                logger.info("pretraining step %d/%d loss %.4f", step + 1, total, losses[-1])
        self.model.eval()
        return losses

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save the model and tokenizer with ``save_pretrained`` (load the encoder from it later).

        Raises:
            HieSqlConfigError: ``path`` is an existing non-empty directory without a model
                ``config.json`` (files of someone else's are never overwritten).
        """
        target = Path(path)
        if target.is_dir() and any(target.iterdir()) and not (target / "config.json").is_file():
            raise HieSqlConfigError(
                f"{target} is a non-empty directory that is not a saved model; refusing to write into it"
            )
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
