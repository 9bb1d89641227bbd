"""The SQL decoder: a causal LM that reads the encoder states as a soft prefix.

The encoder states (projected to the LM width) are placed in front of the LM's own embeddings of
the text prompt, and the LM is trained to continue with the SQL. With ``lora=True`` only LoRA
adapters (peft) and the projection are trained in the LM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from zjulab.hiesql._torch import nn, torch  # first: a typed error without the [torch] extra

# isort: split

from zjulab.hiesql.config import DecoderConfig

logger = logging.getLogger(__name__)

__all__ = ["SQLDecoder"]


def _wrap_lora(lm: Any, cfg: DecoderConfig) -> Any:
    from zjulab.common.deps import require
    from zjulab.hiesql._torch import INSTALL

    peft = require("peft", INSTALL, feature="LoRA decoder (DecoderConfig(lora=True))")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

    lcfg = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(lm, lcfg)


class SQLDecoder(nn.Module):
    """Causal-LM decoder conditioned on encoder states.

    Args:
        lm: A causal LM (``AutoModelForCausalLM``).
        tokenizer: Its tokenizer.
        encoder_hidden: Width of the encoder states.
        config: Decoder settings.
    """

    def __init__(self, lm: Any, tokenizer: Any, encoder_hidden: int, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.lm = _wrap_lora(lm, config) if config.lora else lm
        width = int(self._base().config.hidden_size)
        self.proj = nn.Linear(encoder_hidden, width)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the decoder tokenizer needs an EOS token")
        self.eos_id = int(eos)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)

    def _base(self) -> Any:
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def plain_lm(self) -> Any:
        """A copy of the LM with LoRA merged in (for saving)."""
        import copy

        lm = copy.deepcopy(self.lm)
        return lm.merge_and_unload() if hasattr(lm, "merge_and_unload") else lm

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self._base().get_input_embeddings()(ids)

    def _prefix(
        self, states: torch.Tensor, mask: torch.Tensor, positions: Sequence[int] | None = None
    ) -> torch.Tensor:
        k = self.config.prefix_tokens
        if k == 0:
            return states.new_zeros((0, self.proj.out_features))
        if positions is not None:
            keep = states[torch.tensor(list(positions)[:k], dtype=torch.long, device=states.device)]
        else:
            keep = states[: min(k, int(mask.sum()))]
        return self.proj(keep)

    def loss(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        prompts: Sequence[list[int]],
        targets: Sequence[list[int]],
        positions: Sequence[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """Mean token cross-entropy of the target SQL.

        Args:
            states: ``(B, L, H)`` encoder states.
            mask: ``(B, L)`` encoder attention mask.
            prompts: Prompt token ids per example (may be empty).
            targets: Target SQL token ids per example (EOS is appended here).
            positions: Encoder positions of each example's soft prefix (default: the first ones).

        Returns:
            The scalar loss.
        """
        dev = states.device
        rows, labels = [], []
        for b in range(states.shape[0]):
            pre = self._prefix(states[b], mask[b], positions[b] if positions is not None else None)
            p_ids = torch.tensor(prompts[b], dtype=torch.long, device=dev)
            t_ids = torch.tensor([*targets[b], self.eos_id], dtype=torch.long, device=dev)
            emb = torch.cat([pre, self._embed(p_ids), self._embed(t_ids)], dim=0)
            lab = torch.cat([torch.full((pre.shape[0] + len(p_ids),), -100, device=dev), t_ids])
            rows.append(emb)
            labels.append(lab)
        n = max(r.shape[0] for r in rows)
        width = rows[0].shape[1]
        emb_b = states.new_zeros((len(rows), n, width))
        lab_b = torch.full((len(rows), n), -100, dtype=torch.long, device=dev)
        att = torch.zeros((len(rows), n), dtype=torch.long, device=dev)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            emb_b[i, : r.shape[0]] = r
            lab_b[i, : r.shape[0]] = lab
            att[i, : r.shape[0]] = 1
        out = self.lm(inputs_embeds=emb_b, attention_mask=att, labels=lab_b)
        return out.loss

    @torch.no_grad()
    def generate(
        self,
        states: torch.Tensor,
        mask: torch.Tensor,
        prompt: list[int],
        num_beams: int | None = None,
        positions: Sequence[int] | None = None,
    ) -> list[tuple[str, float]]:
        """Beam-search SQL candidates for one example.

        Args:
            states: ``(L, H)`` encoder states of the example.
            mask: ``(L,)`` its attention mask.
            prompt: Prompt token ids.
            num_beams: Overrides ``config.num_beams``.
            positions: Encoder positions of the soft prefix (default: the first ones).

        Returns:
            ``(sql, score)`` pairs, best first.
        """
        beams = num_beams or self.config.num_beams
        dev = states.device
        pre = self._prefix(states, mask, positions)
        emb = torch.cat([pre, self._embed(torch.tensor(prompt, dtype=torch.long, device=dev))], dim=0)[None]
        att = torch.ones(emb.shape[:2], dtype=torch.long, device=dev)
        out = self.lm.generate(
            inputs_embeds=emb,
            attention_mask=att,
            num_beams=beams,
            num_return_sequences=beams,
            do_sample=False,
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        seqs = out.sequences
        scores = (
            out.sequences_scores.tolist()
            if getattr(out, "sequences_scores", None) is not None
            else [0.0] * len(seqs)
        )
        texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        return [(" ".join(t.split()), float(s)) for t, s in zip(texts, scores)]
