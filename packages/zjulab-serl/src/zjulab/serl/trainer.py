"""SERLTrainer: TRL's GRPOTrainer with the policy also acting as its own judge.

One generation step of :class:`SERLTrainer`:

1. TRL samples N actor rollouts per prompt (``GRPOTrainer._generate``).
2. When TRL asks for rewards (``_calculate_rewards``), the trainer builds the ``C(N, 2) * K``
   judge prompts of every prompt group, and runs TRL's own generate-and-score pipeline on them
   with the same policy (K judge rollouts per pair form a GRPO group). Parsing the judge rollouts
   gives the verdicts, hence the Actor rewards (returned to TRL for the actor batch) and the
   Judge rewards (returned to TRL inside the judge pass).
3. The actor batch and the judge batch are joined into one batch with a ``serl_role`` column,
   split into the micro-batches of gradient accumulation with each role shuffled on its own and
   dealt evenly (:meth:`SERLTrainer._prepare_inputs`), so every row of a role weighs the same.
4. :meth:`SERLTrainer.compute_loss` runs TRL's loss on the actor rows and on the judge rows
   separately (the judge rows in chunks of ``judge_micro_batch_size`` when set) and returns
   ``alpha * L_actor + beta * L_judge``.

Nothing in TRL is copied or patched; the trainer overrides its hooks (``_generate``,
``_calculate_rewards``, ``_generate_and_score_completions``, ``_prepare_inputs``,
``compute_loss``, ``log``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

import torch
from accelerate.utils import gather
from packaging.version import Version
from trl import GRPOTrainer
from trl.trainer.utils import pad

from zjulab.serl.errors import SERLConfigError, SERLInputError
from zjulab.serl.judge import GroupJudgment, score_group
from zjulab.serl.outputs import check_output_dir, claim_output_dir
from zjulab.serl.pairs import judge_prompts
from zjulab.serl.rewards import JudgeDiagnostics
from zjulab.serl.schedule import loss_weights
from zjulab.serl.serl_config import SERLConfig

__all__ = ["SERLTrainer", "serl_actor_reward"]

logger = logging.getLogger(__name__)

_TESTED_TRL = ("1.16", "2")


def serl_actor_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """Placeholder reward function under whose name TRL logs the Actor reward.

    :class:`SERLTrainer` computes rewards itself (they need judge rollouts); calling this
    directly is an error.

    Raises:
        SERLConfigError: Always.
    """
    raise SERLConfigError("serl_actor_reward is computed by SERLTrainer and cannot be called on its own")


def _text_of(item: Any) -> str:
    """The text of a prompt or completion in TRL's standard (str) or conversational form.

    A conversation without assistant turns becomes its user messages (system messages are left
    out: they steer the Actor, the Judge needs the request); one with earlier assistant turns is
    written out as ``role: content`` lines so the Judge sees the dialogue.
    """
    if isinstance(item, str):
        return item
    if not isinstance(item, list):
        raise SERLInputError(f"cannot read text from a {type(item).__name__}")
    turns: list[tuple[str, str]] = []
    for msg in item:
        if not isinstance(msg, dict):
            raise SERLInputError(f"a conversation holds a {type(msg).__name__}, not a message dict")
        content = msg.get("content", "")
        if isinstance(content, list):  # typed content blocks
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
        turns.append((str(msg.get("role", "user")), str(content)))
    if len(turns) == 1:
        return turns[0][1]
    if all(role != "assistant" for role, _ in turns):
        return "\n\n".join(c for role, c in turns if role != "system")
    return "\n\n".join(f"{role}: {content}" for role, content in turns)


def _fresh_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """Empty containers shaped like TRL's completion logs, for one judge pass.

    TRL bounds its deques by the actor batch size; a judge pass has ``(N - 1) * K / 2`` times
    more rows, so these are unbounded (a new set is made for every judge pass).
    """
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, defaultdict):
            out[key] = defaultdict(deque)
        elif isinstance(value, deque):
            out[key] = deque()
        else:
            out[key] = type(value)()
    return out


class SERLTrainer(GRPOTrainer):
    """Self-Examining RL on top of :class:`trl.GRPOTrainer` (the policy is Actor and Judge).

    Args:
        model: Model id, path, ``PreTrainedModel`` or ``PeftModel`` (as for GRPOTrainer).
        args: A :class:`~zjulab.serl.serl_config.SERLConfig`, or a plain :class:`trl.GRPOConfig`
            (SERL's fields then take their defaults; TRL's settings, ``loss_type`` included, are kept).
        train_dataset: Dataset with a ``prompt`` column (standard or conversational).
        eval_dataset: Same format, optional.
        processing_class: Tokenizer; its chat template renders the judge prompts.
        callbacks: Trainer callbacks.
        optimizers: ``(optimizer, scheduler)``.
        peft_config: A peft config (for example ``LoraConfig``) to train an adapter.
        verdict_parser: Maps a judge rollout's text to 1, 2 or None; defaults to
            :func:`~zjulab.serl.verdict.parse_verdict` with the config's format.
        **kwargs: Further :class:`trl.GRPOTrainer` keywords (``reward_funcs``, ``tools``,
            ``rollout_func`` and ``environment_factory`` are not supported).

    Attributes:
        last_judgments: The :class:`~zjulab.serl.judge.GroupJudgment` of every local prompt group
            of the latest generation step (verdict matrices, rewards, raw judge outputs).
        judge_diagnostics: Running diagnostics since the last log.

    Raises:
        SERLConfigError: ``args`` is not a GRPOConfig, or an unsupported keyword is given.
    """

    _tag_names = ["trl", "grpo", "serl"]  # noqa: RUF012 (TRL declares it as a plain list)
    _name = "SERL"

    def __init__(
        self,
        model: Any,
        args: SERLConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        callbacks: Any = None,
        optimizers: tuple[Any, Any] = (None, None),
        peft_config: Any = None,
        verdict_parser: Callable[[str], int | None] | None = None,
        **kwargs: Any,
    ) -> None:
        for key in ("reward_funcs", "tools", "rollout_func", "environment_factory"):
            if kwargs.get(key) is not None:
                raise SERLConfigError(f"SERLTrainer does not support {key}= (SERL computes its own rewards)")
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = SERLConfig(output_dir=f"{str(name).split('/')[-1]}-SERL")
        args = SERLConfig.from_grpo_config(args)  # a plain GRPOConfig gets SERL's defaults
        # before anything is loaded or written (TRL creates folders in output_dir): a user's folder
        # is refused, a new or empty one gets the run marker
        check_output_dir(args.output_dir)
        if args.should_save:
            claim_output_dir(args.output_dir)
        import trl

        if not (Version(_TESTED_TRL[0]) <= Version(trl.__version__) < Version(_TESTED_TRL[1])):
            warnings.warn(
                f"zjulab-serl was tested with trl>={_TESTED_TRL[0]},<{_TESTED_TRL[1]}; found {trl.__version__}",
                stacklevel=2,
            )
        reward_funcs: Any = [serl_actor_reward]
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            **kwargs,
        )
        self.serl_args: SERLConfig = args
        self.judge_config = args.judge_config()
        self.verdict_parser: Callable[[str], int | None] = verdict_parser or self.judge_config.parse
        self._serl_phase = "actor"
        self._serl_pending: dict[str, Any] = {}
        self.last_judgments: list[GroupJudgment] = []
        self.judge_logs: dict[str, Any] = {}
        self.judge_diagnostics: dict[str, JudgeDiagnostics] = {
            "train": JudgeDiagnostics(),
            "eval": JudgeDiagnostics(),
        }

    # ------------------------------------------------------------------ output folder

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train as GRPOTrainer does, in an ``output_dir`` that is new, empty or an earlier SERL run's.

        The folder gets the run marker ``zjulab-serl-run.json`` (see :mod:`zjulab.serl.outputs`).

        Raises:
            SERLConfigError: ``output_dir`` holds files no SERL run wrote (checked before training,
                since TRL writes a model card named ``README.md`` and the model's files there).
        """
        if self.args.should_save:
            claim_output_dir(self.args.output_dir)
        return super().train(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model as GRPOTrainer does, into a folder that is new, empty or an earlier SERL run's.

        Raises:
            SERLConfigError: The folder holds files no SERL run wrote.
        """
        if not _internal_call and self.args.should_save:
            claim_output_dir(output_dir or self.args.output_dir)
        super().save_model(output_dir, _internal_call)

    # ------------------------------------------------------------------ schedule

    def loss_weights(self) -> tuple[float, float]:
        """``(alpha, beta)`` for the current training progress (see :mod:`zjulab.serl.schedule`).

        Progress is ``epoch / num_train_epochs``, or ``global_step / max_steps`` when training is
        bounded by ``max_steps``.
        """
        a = self.serl_args
        if a.loss_schedule == "constant":
            return loss_weights(
                0, 1, schedule="constant", constant=(a.actor_loss_weight, a.judge_loss_weight)
            )
        state = self.state
        if a.max_steps and a.max_steps > 0:
            progress = state.global_step / max(state.max_steps or a.max_steps, 1)
        else:
            progress = (state.epoch or 0.0) / max(float(a.num_train_epochs), 1e-12)
        return loss_weights(progress, 1.0, alpha_cap=a.alpha_cap, beta_floor=a.beta_floor)

    # ------------------------------------------------------------------ generation

    @contextlib.contextmanager
    def _judge_settings(self) -> Iterator[None]:
        """Switch TRL's per-pass settings to the judge pass and back."""
        a = self.serl_args
        k = a.num_judge_generations
        saved: dict[str, Any] = {
            "num_generations": self.num_generations,
            "num_generations_eval": self.num_generations_eval,
            "reward_func_names": self.reward_func_names,
            "max_completion_length": self.max_completion_length,
            "_logs": self._logs,
        }
        vllm: Any = getattr(self, "vllm_generation", None) if getattr(self, "use_vllm", False) else None
        saved_vllm_max = getattr(vllm, "max_completion_length", None)
        gen_config = getattr(self, "generation_config", None)
        gen_kwargs = getattr(self, "generation_kwargs", None)
        saved_max_new = getattr(gen_config, "max_new_tokens", None)
        saved_kwargs_max = gen_kwargs.get("max_new_tokens") if isinstance(gen_kwargs, dict) else None
        self._serl_phase = "judge"
        self.num_generations = k
        self.num_generations_eval = k
        self.reward_func_names = ["serl_judge_reward"]
        self.max_completion_length = a.max_judge_completion_length
        # the judge pass logs its completions apart from the actor's completion table
        self._logs = _fresh_logs(saved["_logs"])
        if gen_config is not None:
            gen_config.max_new_tokens = a.max_judge_completion_length
        if saved_vllm_max is not None:
            vllm.max_completion_length = a.max_judge_completion_length
        if isinstance(gen_kwargs, dict):
            gen_kwargs["max_new_tokens"] = a.max_judge_completion_length
        try:
            yield
        finally:
            self._serl_phase = "actor"
            self.judge_logs = self._logs
            for key, value in saved.items():
                setattr(self, key, value)
            if gen_config is not None:
                gen_config.max_new_tokens = saved_max_new
            if saved_vllm_max is not None:
                vllm.max_completion_length = saved_vllm_max
            if isinstance(gen_kwargs, dict):
                gen_kwargs["max_new_tokens"] = saved_kwargs_max

    def _generate(self, prompts: list[Any]) -> Any:
        if self._serl_phase != "judge":
            return super()._generate(prompts)
        # The K judge prompts of a pair are two runs of K/2 identical prompts; vLLM samples
        # `num_generations` completions per distinct prompt, so generate with K/2 here.
        k = int(self.num_generations or 0)
        self.num_generations = self.num_generations_eval = k // 2
        try:
            return super()._generate(prompts)
        finally:
            self.num_generations = self.num_generations_eval = k

    def _mode(self) -> str:
        return "train" if getattr(self.model, "training", False) else "eval"

    def _group_size(self) -> int:
        return int((self.num_generations if self._mode() == "train" else self.num_generations_eval) or 0)

    def _calculate_rewards(
        self,
        inputs: list[dict[str, Any]],
        prompts: list[Any],
        completions: list[Any],
        completion_ids_list: list[Any],
    ) -> torch.Tensor:
        device = self.accelerator.device
        if self._serl_phase == "judge":
            # a judge rollout stopped at the length limit (its last token is no end of sequence)
            # did not finish its answer: whatever boxes it holds, it has no verdict
            ends = {
                *getattr(self, "eos_token_ids", [self._tokenizer.eos_token_id]),
                self._tokenizer.pad_token_id,
            }
            finished = [bool(ids) and int(ids[-1]) in ends for ids in completion_ids_list]
            local = self._score_judge_pass(completions, finished)
        else:
            local = self._run_judge_pass(prompts, completions)
        return gather(torch.tensor(local, dtype=torch.float32, device=device).unsqueeze(1))

    def _run_judge_pass(self, prompts: list[Any], completions: list[Any]) -> list[float]:
        """Build and run the judge rollouts for the local actor batch; return the Actor rewards."""
        n = self._group_size()
        if len(prompts) % n:
            raise SERLInputError(f"{len(prompts)} local actor rollouts do not split into groups of {n}")
        cfg = self.judge_config
        conversational = getattr(self._tokenizer, "chat_template", None) is not None
        judge_inputs: list[dict[str, Any]] = []
        groups = []
        for g in range(len(prompts) // n):
            instruction = _text_of(prompts[g * n])
            if any(_text_of(p) != instruction for p in prompts[g * n : (g + 1) * n]):
                raise SERLInputError(f"actor rollouts {g * n}..{(g + 1) * n - 1} do not share one prompt")
            responses = [_text_of(c) for c in completions[g * n : (g + 1) * n]]
            texts, slots = judge_prompts(instruction, responses, cfg)
            groups.append((instruction, responses, slots))
            for text in texts:
                judge_inputs.append(
                    {"prompt": [{"role": "user", "content": text}] if conversational else text}
                )
        self._serl_pending = {"groups": groups}
        mode = self._mode()
        before = {key: len(values) for key, values in self._metrics[mode].items()}
        with self._judge_settings():
            judge_batch = GRPOTrainer._generate_and_score_completions(self, judge_inputs)
        # metrics TRL recorded during the judge pass go under "judge/"
        for key in list(self._metrics[mode].keys()):
            if key.startswith(("judge/", "serl/")) or key == "num_tokens":
                continue
            values = self._metrics[mode][key]
            new = values[before.get(key, 0) :]
            if new:
                del values[before.get(key, 0) :]
                self._metrics[mode][f"judge/{key}"].extend(new)
                if not values:
                    del self._metrics[mode][key]
        self._serl_pending["judge_batch"] = judge_batch
        return list(self._serl_pending.pop("actor_rewards"))

    def _score_judge_pass(self, completions: list[Any], finished: list[bool] | None = None) -> list[float]:
        """Parse the judge rollouts; keep the Actor rewards; return the Judge rewards."""
        cfg = self.judge_config
        raw = [_text_of(c) for c in completions]
        done = finished if finished is not None else [True] * len(raw)
        actor: list[float] = []
        judge: list[float] = []
        results = []
        start = 0
        for instruction, responses, slots in self._serl_pending["groups"]:
            chunk = raw[start : start + len(slots)]
            ends = done[start : start + len(slots)]
            start += len(slots)
            res = score_group(
                instruction, responses, chunk, cfg, slots, parser=self.verdict_parser, finished=ends
            )
            results.append(res)
            actor.extend(float(x) for x in res.actor_rewards)
            judge.extend(float(x) for x in res.judge_rewards)
        if start != len(raw):
            raise SERLInputError(f"{len(raw)} judge rollouts for {start} judge prompts")
        self.last_judgments = results
        self._serl_pending["actor_rewards"] = actor
        # the verdicts as scored, for the judge completions table (gathered by TRL like its columns)
        self._log_completion_extra("verdict", [v for r in results for v in r.verdicts])
        self._log_diagnostics(results)
        return judge

    def _log_diagnostics(self, results: list[GroupJudgment]) -> None:
        mode = self._mode()
        diag = JudgeDiagnostics()
        for r in results:
            diag = diag + r.diagnostics
        counts = torch.tensor(
            [
                diag.judgments,
                diag.invalid,
                diag.first_picks,
                diag.order_pairs,
                diag.consistent_pairs,
                diag.agree,
                diag.disagree,
                diag.spread_sum,
                diag.groups,
            ],
            dtype=torch.float64,
            device=self.accelerator.device,
        )
        total = self.accelerator.reduce(counts, reduction="sum").tolist()
        names = (
            "judgments",
            "invalid",
            "first_picks",
            "order_pairs",
            "consistent_pairs",
            "agree",
            "disagree",
        )
        merged = JudgeDiagnostics(
            **{name: int(x) for name, x in zip(names, total[:7])},
            spread_sum=float(total[7]),
            groups=int(total[8]),
        )
        self.judge_diagnostics[mode] = self.judge_diagnostics[mode] + merged
        for key, value in merged.as_dict().items():
            if value == value:  # skip NaN (no data for that rate in this batch)
                self._metrics[mode][f"serl/{key}"].append(float(value))

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if any(("image" in x or "images" in x) for x in inputs):
            raise SERLInputError("SERLTrainer supports text prompts only (found an image column)")
        actor = super()._generate_and_score_completions(inputs)
        judge = self._serl_pending.pop("judge_batch")
        self._serl_pending = {}
        return self._join(actor, judge)

    def _join(self, actor: dict[str, Any], judge: dict[str, Any]) -> dict[str, Any]:
        """One batch of actor and judge rows with a ``serl_role`` column (0 actor, 1 judge)."""
        pad_id = self._tokenizer.pad_token_id
        n_a, n_j = actor["prompt_ids"].size(0), judge["prompt_ids"].size(0)
        out: dict[str, Any] = {}
        left = {"prompt_ids": pad_id, "prompt_mask": 0}
        right = {
            "completion_ids": pad_id,
            "completion_mask": 0,
            "old_per_token_logps": 0.0,
            "ref_per_token_logps": 0.0,
            "sampling_per_token_logps": 0.0,
            "importance_sampling_ratio": 1.0,
        }
        # Keep TRL's key order (a batch-sized tensor first): TRL takes the batch size from the
        # first non-None value, so a scalar such as num_items_in_batch must not lead.
        for key in list(actor) + [k for k in judge if k not in actor]:
            a: Any = actor.get(key)
            j: Any = judge.get(key)
            if key == "num_items_in_batch":
                out["serl_actor_items"], out["serl_judge_items"] = a, j
                out[key] = a + j
            elif a is None or j is None:
                if a is not None or j is not None:
                    raise SERLInputError(f"the actor and judge batches disagree on {key!r}")
            elif key == "advantages":
                out[key] = torch.cat([a, j])
            elif key in left:
                out[key] = pad(list(a) + list(j), padding_value=left[key], padding_side="left")
            elif key in right and a.dim() == 2 and a.size(1) != 1:
                out[key] = pad(list(a) + list(j), padding_value=right[key], padding_side="right")
            elif isinstance(a, torch.Tensor) and a.dim() >= 1 and a.size(0) == n_a:
                out[key] = torch.cat([a, j])
            else:
                raise SERLInputError(f"cannot join the actor and judge values of {key!r}")
        out["serl_role"] = torch.cat(
            [torch.zeros(n_a, dtype=torch.long), torch.ones(n_j, dtype=torch.long)]
        ).to(actor["prompt_ids"].device)
        return out

    # ------------------------------------------------------------------ loss

    @staticmethod
    def _rows(inputs: dict[str, Any], idx: torch.Tensor, items: Any) -> dict[str, Any]:
        """The rows ``idx`` of a joined batch, with padding columns trimmed."""
        size = inputs["serl_role"].size(0)
        sub: dict[str, Any] = {}
        for key, value in inputs.items():
            if key.startswith("serl_"):
                continue
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == size:
                sub[key] = value[idx]
            else:
                sub[key] = value
        if items is not None:
            sub["num_items_in_batch"] = items
        keep_p = sub["prompt_mask"].any(dim=0)
        first = int(keep_p.nonzero()[0]) if keep_p.any() else sub["prompt_mask"].size(1) - 1
        sub["prompt_ids"], sub["prompt_mask"] = sub["prompt_ids"][:, first:], sub["prompt_mask"][:, first:]
        keep_c = sub["completion_mask"].any(dim=0)
        last = int(keep_c.nonzero()[-1]) + 1 if keep_c.any() else 1
        width = sub["completion_ids"].size(1)
        for key, value in list(sub.items()):
            if (
                isinstance(value, torch.Tensor)
                and value.dim() == 2
                and value.size(1) == width
                and (
                    key.startswith("completion")
                    or key.endswith("per_token_logps")
                    or key in ("tool_mask", "importance_sampling_ratio")
                )
            ):
                sub[key] = value[:, :last]
        return sub

    # ------------------------------------------------------------------ batching

    def _prepare_inputs(self, generation_batch: Any) -> Any:
        """TRL's buffering of a generation batch over micro-batches, with the split stratified by role.

        TRL shuffles all rows together before splitting, so the number of actor and judge rows
        varies between micro-batches, and with a per-micro-batch mean (``loss_type="grpo"``) a row
        weighs more in a micro-batch with few rows of its role. Here each role is shuffled on its
        own and dealt evenly, so every micro-batch holds the same number of actor rows and of
        judge rows: every row of a role weighs the same at any gradient accumulation.
        """
        if not getattr(self.model, "training", False):
            return super()._prepare_inputs(generation_batch)
        chunks = int(self.args.steps_per_generation)
        generate_every = chunks * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            self._buffered_inputs = self._split_by_role(batch, chunks)
        return self._buffered_inputs[self._step % chunks]

    @staticmethod
    def _split_by_role(batch: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
        """Split a joined batch into ``chunks`` micro-batches with equal role counts (rows shuffled).

        Raises:
            SERLInputError: A role's row count is not a multiple of ``chunks``.
        """
        role = batch["serl_role"]
        size = role.size(0)
        parts = []
        for code in (0, 1):
            idx = (role == code).nonzero(as_tuple=True)[0]
            if idx.numel() % chunks:
                name = ("actor", "judge")[code]
                raise SERLInputError(f"{idx.numel()} {name} rows do not split into {chunks} micro-batches")
            idx = idx[torch.randperm(idx.numel(), device=idx.device)]
            parts.append(idx.view(chunks, -1))
        out = []
        for c in range(chunks):
            rows = torch.cat([parts[0][c], parts[1][c]])
            chunk: dict[str, Any] = {}
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == size:
                    chunk[key] = value[rows]
                elif isinstance(value, list) and len(value) == size:
                    chunk[key] = [value[i] for i in rows.tolist()]
                else:
                    chunk[key] = value
            out.append(chunk)
        return out

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """``alpha * L_actor + beta * L_judge``, each TRL's loss (``loss_type``) on its own rows.

        Every micro-batch holds the same number of rows of each role (see :meth:`_prepare_inputs`),
        so each role's loss, summed over an accumulation window, is the mean over all of that
        role's rows (``"grpo"``, ``"dr_grpo"``, ``"sapo"``, ``"luspo"``) or tokens (``"dapo"``,
        ``"cispo"``, ``"vespo"``: normalised by the role's own token count); ``"bnpo"`` keeps TRL's
        per-micro-batch token mean. TRL's loss metrics (entropy, KL, clip ratios) are logged per
        role under ``actor/`` and ``judge/``; ``serl/actor_loss`` and ``serl/judge_loss`` are the
        two losses on the scale of ``loss`` (summed over the accumulation window).

        A batch without a ``serl_role`` column is handed to GRPOTrainer unchanged.
        """
        if return_outputs:
            raise SERLConfigError("SERLTrainer does not return outputs from compute_loss")
        role = inputs.get("serl_role")
        if role is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = self._mode()
        alpha, beta = self.loss_weights()
        self._metrics[mode]["serl/alpha"].append(alpha)
        self._metrics[mode]["serl/beta"].append(beta)
        total: torch.Tensor | None = None
        parts: dict[str, float] = {}
        for code, name, weight, items in (
            (0, "actor", alpha, inputs.get("serl_actor_items")),
            (1, "judge", beta, inputs.get("serl_judge_items")),
        ):
            idx = (role == code).nonzero(as_tuple=True)[0]
            if idx.numel() == 0 or weight == 0.0:
                continue
            before = {key: len(values) for key, values in self._metrics[mode].items()}
            saved = self.max_completion_length
            if name == "judge":
                self.max_completion_length = self.serl_args.max_judge_completion_length
            try:
                if name == "judge" and self.serl_args.judge_micro_batch_size:
                    part = self._chunked_loss(model, inputs, idx, items, weight)
                else:
                    part = self._compute_loss(model, self._rows(inputs, idx, items))
            finally:
                self.max_completion_length = saved
            self._move_new_metrics(mode, before, name)
            parts[name] = float(part.detach())
            total = weight * part if total is None else total + weight * part
        self._log_role_losses(mode, parts)
        if total is None:  # nothing to learn from in this micro-batch; keep the graph connected
            total = sum((p.sum() * 0.0 for p in model.parameters() if p.requires_grad), torch.tensor(0.0))
        return total

    def _chunked_loss(
        self, model: Any, inputs: dict[str, Any], idx: torch.Tensor, items: Any, weight: float
    ) -> torch.Tensor:
        """One role's loss over its rows in chunks of ``judge_micro_batch_size``.

        Each chunk's loss is weighted by its share of the rows (per-sequence losses) or of the
        tokens (``"bnpo"``) so the sum equals the loss of one pass; token-sum losses normalised
        by the role's token count (``"dapo"``, ``"cispo"``, ``"vespo"``) add up as they are. In
        training, every chunk but the last is back-propagated here, without gradient
        synchronisation, so only one chunk's activations are held at a time; the last one is
        returned with its graph (its value includes the others', detached).
        """
        size = int(self.serl_args.judge_micro_batch_size or idx.numel())
        chunks = list(idx.split(size))
        loss_type = self.loss_type
        by_tokens = loss_type == "bnpo"
        summed = loss_type in ("dapo", "cispo", "vespo")

        def amount(rows: torch.Tensor) -> float:
            if not by_tokens:
                return float(rows.numel())
            mask = inputs["completion_mask"][rows]
            if "tool_mask" in inputs:
                mask = mask * inputs["tool_mask"][rows]
            return float(mask.sum())

        total = sum(amount(c) for c in chunks) or 1.0
        learn = model.training and torch.is_grad_enabled()
        done: torch.Tensor | None = None
        for c in chunks[:-1]:
            share = 1.0 if summed else amount(c) / total
            with self.accelerator.no_sync(model) if learn else contextlib.nullcontext():
                part = self._compute_loss(model, self._rows(inputs, c, items)) * share
                if learn:
                    self.accelerator.backward(weight * part)
            done = part.detach() if done is None else done + part.detach()
        share = 1.0 if summed else amount(chunks[-1]) / total
        last = self._compute_loss(model, self._rows(inputs, chunks[-1], items)) * share
        return last if done is None else last + done

    def _move_new_metrics(self, mode: str, before: dict[str, int], prefix: str) -> None:
        """Move the metric values TRL's loss just recorded to ``prefix/<name>``."""
        metrics = self._metrics[mode]
        for key in list(metrics.keys()):
            if key.startswith(("actor/", "judge/", "serl/")):
                continue
            start = before.get(key, 0)
            new = metrics[key][start:]
            if new:
                del metrics[key][start:]
                metrics[f"{prefix}/{key}"].extend(new)
                if not metrics[key]:
                    del metrics[key]

    def _log_role_losses(self, mode: str, parts: dict[str, float]) -> None:
        """Log each role's loss once per optimizer step, summed over the accumulation window."""
        if mode != "train":
            for name, value in parts.items():
                self._metrics[mode][f"serl/{name}_loss"].append(value)
            return
        window = getattr(self, "_serl_window", None)
        if window is None:
            window = self._serl_window = {"micro": 0, "actor": 0.0, "judge": 0.0, "seen": set()}
        window["micro"] += 1
        for name, value in parts.items():
            window[name] += value
            window["seen"].add(name)
        if window["micro"] >= int(self.current_gradient_accumulation_steps or 1):
            for name in ("actor", "judge"):
                if name in window["seen"]:
                    self._metrics[mode][f"serl/{name}_loss"].append(window[name])
            self._serl_window = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Log as GRPOTrainer does, write the judge completions table, reset the judge diagnostics.

        With ``log_completions=True`` the judge rollouts of the latest generation step get their
        own table (``completions/judge_completions_<step>.parquet``, and ``judge_completions``
        on wandb / trackio) next to TRL's actor table: prompt, completion, parsed verdict,
        judge reward and advantage.
        """
        mode = self._mode()
        super().log(logs, start_time)
        self.judge_diagnostics[mode] = JudgeDiagnostics()
        if self.accelerator.is_main_process and self.log_completions:
            self._log_judge_table()

    def _log_judge_table(self) -> None:
        logs = self.judge_logs
        prompts = list(logs.get("prompt", []))
        if not prompts:
            return
        import os

        import pandas as pd

        completions = list(logs.get("completion", []))
        rewards = {f"judge_{k}": list(v) for k, v in dict(logs.get("rewards", {})).items()}
        table = {
            "step": [self.state.global_step] * len(prompts),
            "prompt": [str(p) for p in prompts],
            "completion": [str(c) for c in completions],
            "verdict": list(dict(logs.get("extra", {})).get("verdict", [])),
            **rewards,
            "advantage": list(logs.get("advantages", [])),
        }
        n = len(prompts)
        df = pd.DataFrame({k: v for k, v in table.items() if len(v) == n})
        import io

        from zjulab.common.io import atomic_write_bytes

        claim_output_dir(self.args.output_dir)
        buffer = io.BytesIO()
        df.to_parquet(buffer)
        name = f"judge_completions_{self.state.global_step:05d}.parquet"
        atomic_write_bytes(os.path.join(self.args.output_dir, "completions", name), buffer.getvalue())
        from trl.trainer import grpo_trainer

        report_to = self.args.report_to or []
        for name in ("wandb", "trackio"):
            backend = getattr(grpo_trainer, name, None)
            if name in report_to and backend is not None and (name != "wandb" or backend.run is not None):
                backend.log({"judge_completions": backend.Table(dataframe=df)})
