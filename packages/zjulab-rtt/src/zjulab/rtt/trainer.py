"""RTT-GRPO on TRL: ``GRPOTrainer`` with token-level rubric advantages.

:class:`RTTGRPOTrainer` lets TRL sample, score and build the batch, then replaces the ``[B]``
GRPO advantages with ``[B, T]`` RTT-GRPO advantages
``A[i, t] = A_resp[i] + λ·A_tok[i, t]`` (or the ``mix`` form). TRL's loss accepts ``[B, T]``
advantages: clipping (``epsilon`` / ``epsilon_high`` / ``delta``), the KL term (``beta``) and the
token-level loss types work token-wise; TRL's per-sequence decisions (off-policy masking, VESPO's
weights) are taken on ``A_resp``, and sequence-level importance ratios are refused (see
:class:`RTTGRPOTrainer`). Nothing of TRL is copied; ``_generate_and_score_completions`` is
extended and ``_compute_loss``, ``get_off_policy_mask`` and ``get_gamma_weights`` are wrapped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from trl import GRPOTrainer

from zjulab.rtt.config import RTTConfig
from zjulab.rtt.errors import RTTConfigError
from zjulab.rtt.normalization import combine_advantages, token_advantages
from zjulab.rtt.relevance import RelevanceModel, RelevanceQuery, ScoredText, UniformRelevance
from zjulab.rtt.reward import RubricReward, ScoreBatch
from zjulab.rtt.rubrics import Rubric

__all__ = ["RTTGRPOTrainer", "TokenCredit"]

logger = logging.getLogger(__name__)


class TokenCredit:
    """The per-token credit of the last batch, kept for inspection and display.

    Attributes:
        completion_ids: One list of policy token ids per response (no padding).
        texts: Decoded responses.
        rubrics: Rubrics of each response.
        scores: ``[B, K]`` rubric scores.
        weights: ``[B, K, T]`` relevance.
        token_advantages: ``[B, T]`` token advantages ``A_tok``.
        response_advantages: ``[B]`` GRPO advantages ``A_resp``.
        advantages: ``[B, T]`` final advantages.
    """

    def __init__(self, **fields: Any) -> None:
        self.completion_ids: list[list[int]] = fields["completion_ids"]
        self.texts: list[str] = fields["texts"]
        self.rubrics: list[list[Rubric]] = fields["rubrics"]
        self.scores: torch.Tensor = fields["scores"]
        self.weights: torch.Tensor = fields["weights"]
        self.token_advantages: torch.Tensor = fields["token_advantages"]
        self.response_advantages: torch.Tensor = fields["response_advantages"]
        self.advantages: torch.Tensor = fields["advantages"]


def _refuse_options(args: Any) -> None:
    """Refuse TRL options under which per-token advantages lose their meaning.

    Raises:
        RTTConfigError: ``importance_sampling_level="sequence"`` (also implied by
            ``loss_type="luspo"``): one importance ratio per sequence makes every token's gradient
            the sequence mean of its advantages, so the token credit is averaged away.
    """
    if args is None:
        return
    if (
        getattr(args, "importance_sampling_level", "token") == "sequence"
        or getattr(args, "loss_type", "") == "luspo"
    ):
        raise RTTConfigError(
            "RTTGRPOTrainer needs importance_sampling_level='token' (and a loss_type other than 'luspo'): "
            "with one importance ratio per sequence every token's gradient is the sequence mean of its "
            "advantages, so token-level credit would be averaged away"
        )


class RTTGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with Rubrics-to-Tokens credit assignment.

    The rubric reward is the first reward function (more may follow in ``reward_funcs``); the
    response advantage ``A_resp`` is TRL's, from the weighted sum of every reward function.
    Runs wherever ``GRPOTrainer`` runs: CPU, one GPU, or many under ``accelerate launch``.

    TRL options that read the advantages, with ``[B, T]`` advantages:

    - clipping (``epsilon``, ``epsilon_high``, ``delta``), the KL term (``beta``), loss types
      ``grpo``/``bnpo``/``dr_grpo``/``dapo``/``cispo``/``sapo``: token-wise, as documented for a
      token's advantage (SAPO's temperature follows each token's sign, as PPO's clipping does);
      clip-ratio metrics count tokens whose own advantage has the clipped sign.
    - ``off_policy_mask_threshold``: a per-sequence decision, taken on the response advantage
      ``A_resp`` (the batch column ``rtt_response_advantages``).
    - ``loss_type="vespo"``: the per-sequence gamma weight's shape follows the sign of ``A_resp``.
    - ``importance_sampling_level="sequence"`` and ``loss_type="luspo"``: refused (see
      :func:`_refuse_options`).
    - ``scale_rewards``, ``mask_truncated_completions``, ``top_entropy_quantile``, vLLM
      importance sampling: do not read the advantages; they act as in GRPO. ``scale_rewards``
      scales ``A_resp`` only (the token term has its own normalisation, ``token_norm``).

    Args:
        model: Policy (hub id, path, or loaded model), as for ``GRPOTrainer``.
        rubric_reward: Scores rubrics; also TRL's first reward function.
        relevance: Token relevance source (a trained
            :class:`~zjulab.rtt.discriminator.RelevanceDiscriminator`,
            :class:`~zjulab.rtt.relevance.SpanRelevance`...); ``None`` means uniform relevance,
            which is plain GRPO with ``token_norm="intra_sample"`` only (the group
            normalisations then add a per-response term, constant over its tokens).
        rtt_config: RTT settings (``λ``, combination, normalisation).
        reward_funcs: Extra TRL reward functions added after the rubric reward.
        **kwargs: Passed to ``GRPOTrainer`` (``args``, ``train_dataset``, ``processing_class``...).
    """

    def __init__(
        self,
        model: Any,
        rubric_reward: RubricReward,
        relevance: RelevanceModel | None = None,
        rtt_config: RTTConfig | None = None,
        *,
        reward_funcs: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(rubric_reward, RubricReward):
            raise RTTConfigError(f"rubric_reward must be a RubricReward, got {type(rubric_reward).__name__}")
        if relevance is not None and not hasattr(relevance, "token_relevance"):
            raise RTTConfigError(f"relevance {type(relevance).__name__} has no token_relevance() method")
        for name in ("_generate_and_score_completions", "_compute_loss"):
            if not hasattr(GRPOTrainer, name):
                raise RTTConfigError(f"this TRL version has no GRPOTrainer.{name}; install trl>=1.16,<2")
        _refuse_options(kwargs.get("args"))
        self.rubric_reward = rubric_reward
        self._rtt_sequence_advantages: torch.Tensor | None = None
        self.relevance: RelevanceModel = relevance if relevance is not None else UniformRelevance()
        self.rtt_config = rtt_config or RTTConfig()
        self.last_credit: TokenCredit | None = None
        funcs: list[Any] = [rubric_reward, *(reward_funcs or [])]
        super().__init__(model=model, reward_funcs=funcs, **kwargs)

    # ----- TRL's sequence-level decisions -----------------------------------------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._rtt_sequence_advantages = inputs.get("rtt_response_advantages")
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._rtt_sequence_advantages = None

    def _sequence_advantages(self, advantages: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` response advantages for TRL's per-sequence decisions (``A_resp``)."""
        seq = self._rtt_sequence_advantages
        if seq is None or advantages.dim() != 2 or advantages.size(1) == 1:
            return advantages
        return seq.to(device=advantages.device, dtype=advantages.dtype).reshape(-1, 1)

    def get_off_policy_mask(  # type: ignore[override]
        self,
        advantages: torch.Tensor,
        per_token_logps: torch.Tensor,
        sampling_per_token_logps: torch.Tensor,
        mask: torch.Tensor,
        off_policy_threshold: float,
    ) -> torch.Tensor:
        """TRL's off-policy sequence mask, decided on the response advantage ``A_resp``.

        TRL keeps a sequence whose advantage is non-negative or whose mean KL is small; fed
        ``[B, T]`` advantages it would drop single tokens (exactly the blamed ones).
        """
        return GRPOTrainer.get_off_policy_mask(
            advantages=self._sequence_advantages(advantages),
            per_token_logps=per_token_logps,
            sampling_per_token_logps=sampling_per_token_logps,
            mask=mask,
            off_policy_threshold=off_policy_threshold,
        )

    def get_gamma_weights(self, advantages: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """VESPO's per-sequence weight, its shape parameters chosen by the sign of ``A_resp``."""
        return GRPOTrainer.get_gamma_weights(self._sequence_advantages(advantages), *args, **kwargs)

    # ----- scoring -----------------------------------------------------------------------------
    def _rubric_scores(self, inputs: list[dict[str, Any]], texts: list[str]) -> ScoreBatch:
        last = self.rubric_reward.last
        if last is not None and len(last) == len(texts):
            return last
        column = self.rubric_reward.rubrics_column
        return self.rubric_reward.score(
            [x.get("prompt", "") for x in inputs], texts, [x.get(column) for x in inputs]
        )

    def _relevance_tensor(
        self,
        batch: ScoreBatch,
        ids: list[list[int]],
        texts: list[str],
        k: int,
        positions: list[torch.Tensor],
        t: int,
        views: list[ScoredText | None] | None = None,
    ) -> torch.Tensor:
        """``[B, K, T]`` relevance, each response's values scattered back to its token positions."""
        device = self.accelerator.device
        weights = torch.zeros(len(ids), k, t)
        queries: list[RelevanceQuery] = []
        slots: list[tuple[int, int]] = []
        for i, rubrics in enumerate(batch.rubrics):
            for j, rubric in enumerate(rubrics[:k]):
                queries.append(RelevanceQuery(rubric, ids[i], texts[i], views[i] if views else None))
                slots.append((i, j))
        if queries:
            kwargs: dict[str, Any] = {}
            if hasattr(self.relevance, "predict_ids") or hasattr(self.relevance, "judged"):
                kwargs["batch_size"] = self.rtt_config.relevance_batch_size
            rel = self.relevance.token_relevance(queries, self.processing_class, **kwargs)
            for (i, j), w in zip(slots, rel):
                n = min(len(w), len(positions[i]))
                weights[i, j, positions[i][:n]] = w[:n].float()
        return weights.to(device)

    @staticmethod
    def _token_views(
        batch: ScoreBatch, ids: list[list[int]], texts: list[str], k: int
    ) -> tuple[torch.Tensor, list[ScoredText | None]]:
        """``[B, K]`` scores for the token credit, and where each scored text sits in the tokens.

        TRL hands the reward function the completion as it parsed it; with tool calls that text
        (the content of the assistant messages) differs from the decoded tokens. When each piece
        of it is found, in order, in the decoded completion, the reward's scores stand and the
        checkers' spans are carried from the scored text to the tokens (tool-call markup, tool
        results and a parsed reasoning block get no span). When a piece cannot be found, a
        checked rubric is scored again on the decoded text, so its sign and its spans agree.
        A response with no token in the loss (``mask_truncated_completions``) keeps its scores.
        """
        scores = batch.scores[:, :k].clone()
        views: list[ScoredText | None] = [None] * len(texts)
        for i, (scored, decoded) in enumerate(zip(batch.responses, texts)):
            if scored == decoded or not ids[i]:
                continue
            views[i] = ScoredText.locate(batch.pieces[i], decoded)
            if views[i] is not None:
                continue
            logger.debug("response %d: the scored text is not in the decoded tokens; checking those", i)
            for j, rubric in enumerate(batch.rubrics[i][:k]):
                if rubric.kind == "check":
                    scores[i, j] = 1.0 if rubric.evaluate(decoded).passed else -1.0
        return scores, views

    # ----- the hook ----------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self.rubric_reward.last = None
        output = super()._generate_and_score_completions(inputs)
        cfg = self.rtt_config
        mode = "train" if getattr(self.model, "training", True) else "eval"
        group = int((self.num_generations if mode == "train" else self.num_generations_eval) or 1)
        completion_ids = output["completion_ids"]
        completion_mask = output["completion_mask"]
        mask = completion_mask * output["tool_mask"] if "tool_mask" in output else completion_mask
        b, t = completion_ids.shape
        # Relevance is computed on the whole completion (model tokens and tool / environment
        # tokens alike: the text the rubric reward scored), scattered back to the original token
        # positions, then zeroed on tool / environment tokens, which the loss does not train.
        positions = [completion_mask[i].bool().nonzero(as_tuple=True)[0].cpu() for i in range(b)]
        ids = [completion_ids[i][completion_mask[i].bool()].tolist() for i in range(b)]
        tokenizer: Any = self.processing_class
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        batch = self._rubric_scores(inputs, texts)
        if len(batch) != b:
            raise RTTConfigError(f"rubric scores cover {len(batch)} responses, the batch has {b}")
        k = min(batch.scores.shape[1], cfg.max_rubrics)
        if batch.scores.shape[1] > cfg.max_rubrics:
            logger.warning("a prompt has %d rubrics; using the first %d", batch.scores.shape[1], k)
        device = completion_ids.device
        scores, views = self._token_views(batch, ids, texts, k)
        scores = scores.to(device)
        rmask = batch.mask[:, :k].to(device)
        weights = self._relevance_tensor(batch, ids, texts, k, positions, t, views)
        tmask = mask.to(weights.dtype)
        weights = weights * tmask.unsqueeze(1)
        if cfg.token_norm == "intra_sample" or self.accelerator.num_processes == 1:
            a_tok = token_advantages(
                weights, scores, tmask, rmask, method=cfg.token_norm, group_size=group,
                eps=cfg.eps, temperature=cfg.softmax_temperature,
            )  # fmt: skip
        else:
            a_tok = self._gathered_token_advantages(weights, scores, tmask, rmask, group)
        if cfg.token_adv_clip is not None:
            a_tok = a_tok.clamp(-cfg.token_adv_clip, cfg.token_adv_clip)
        a_resp = output["advantages"]
        output["advantages"] = combine_advantages(a_resp, a_tok, lam=cfg.lam, mode=cfg.combine)
        # TRL's sequence-level decisions (off-policy masking, VESPO's weights) read this
        output["rtt_response_advantages"] = a_resp
        self._log_rtt(mode, scores, rmask, a_tok, tmask)
        self.last_credit = TokenCredit(
            completion_ids=ids,
            texts=list(texts),
            rubrics=[list(r[:k]) for r in batch.rubrics],
            scores=scores.detach().cpu(),
            weights=weights.detach().cpu(),
            token_advantages=a_tok.detach().cpu(),
            response_advantages=a_resp.detach().cpu(),
            advantages=output["advantages"].detach().cpu(),
        )
        return output

    def _gathered_token_advantages(
        self,
        weights: torch.Tensor,
        scores: torch.Tensor,
        tmask: torch.Tensor,
        rmask: torch.Tensor,
        group: int,
    ) -> torch.Tensor:
        """Group normalisations across processes: gather padded tensors, normalise, slice back."""
        acc = self.accelerator
        cfg = self.rtt_config
        b, _, t = weights.shape
        w = acc.pad_across_processes(acc.pad_across_processes(weights, dim=1), dim=2)
        s = acc.pad_across_processes(scores, dim=1)
        r = acc.pad_across_processes(rmask, dim=1)
        m = acc.pad_across_processes(tmask, dim=1)
        a = token_advantages(
            acc.gather(w), acc.gather(s), acc.gather(m), acc.gather(r), method=cfg.token_norm,
            group_size=group, eps=cfg.eps, temperature=cfg.softmax_temperature,
        )  # fmt: skip
        start = acc.process_index * b
        return a[start : start + b, :t]

    def _log_rtt(
        self, mode: str, scores: torch.Tensor, rmask: torch.Tensor, a_tok: torch.Tensor, tmask: torch.Tensor
    ) -> None:
        met = ((scores > 0).float() * rmask).sum()
        total = rmask.sum().clamp(min=1.0)
        all_met = (((scores > 0) | (rmask == 0)).all(dim=1)).float().mean()
        self._metrics[mode]["rtt/rubric_accuracy"].append(float((met / total).item()))
        self._metrics[mode]["rtt/instruction_accuracy"].append(float(all_met.item()))
        abs_mean = (a_tok.abs() * tmask).sum() / tmask.sum().clamp(min=1.0)
        self._metrics[mode]["rtt/token_advantage_abs_mean"].append(float(abs_mean.item()))
