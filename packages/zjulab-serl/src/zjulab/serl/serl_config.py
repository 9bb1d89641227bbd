"""Training configuration: TRL's :class:`~trl.GRPOConfig` plus SERL's fields."""

from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields
from typing import Literal

from trl import GRPOConfig

from zjulab.serl.config import DEFAULT_JUDGE_TEMPLATE, JudgeConfig
from zjulab.serl.errors import SERLConfigError

__all__ = ["SERLConfig"]


def _bf16_supported() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available

    try:
        return bool(is_torch_bf16_gpu_available())
    except Exception:  # a broken CUDA setup reads as "no bf16 GPU"
        return False


@dataclass
class SERLConfig(GRPOConfig):
    r"""Settings of :class:`~zjulab.serl.trainer.SERLTrainer`.

    Every :class:`~trl.GRPOConfig` field keeps its meaning: ``num_generations`` is N (actor
    rollouts per prompt), ``max_completion_length`` bounds actor rollouts, ``beta`` is TRL's KL
    coefficient (not SERL's judge weight), ``loss_type`` picks how each of the two clipped losses
    is aggregated (TRL's default, ``"dapo"``: token sums normalised by each role's own token
    count; the authors used ``"bnpo"``, the same thing within one micro-batch).
    ``per_device_train_batch_size`` counts actor rollouts; the ``(N - 1) * K / 2`` judge rollouts
    per actor rollout ride along, dealt evenly over the micro-batches (see
    ``judge_micro_batch_size`` to bound them). ``bf16`` left unset follows the machine (on when a
    bf16-capable GPU is present) instead of TRL's always-on default.

    Args:
        num_judge_generations: K, judge rollouts per unordered pair of actor rollouts (even; half
            in each order).
        max_judge_completion_length: Token limit of a judge rollout.
        actor_reward: ``"length_controlled"`` (the paper's) or ``"copeland"``.
        length_band_low: A win counts when ``low * len(loser) < len(winner) < high * len(loser)``.
        length_band_high: The ``high`` of that band.
        length_band_reference: ``"loser"`` (the authors' rule, above) or ``"winner"`` (the band
            drawn around the winner's length; see :class:`~zjulab.serl.config.JudgeConfig`).
        verdict_format: ``"boxed"`` (only ``\boxed{1}`` / ``\boxed{2}`` are valid) or ``"lenient"``.
        strip_reasoning: Cut actor rollouts after their reasoning before judging them.
        reasoning_end: Marker that closes a reasoning block.
        reasoning_start: Marker that opens a reasoning block (a judge rollout that opens one and
            never closes it has no verdict).
        reasoning_opened_by_prompt: The chat template opens the reasoning block in the prompt.
        read_truncated_verdicts: Read a verdict from a judge rollout that stopped at
            ``max_judge_completion_length`` without ending (the authors' code does). By default it
            has no verdict (reward -1): its answer is unfinished, and a box in it may be part of a
            sentence ("``\boxed{1}`` if ..., ``\boxed{2}`` if ...") or of reasoning whose markers
            the tokenizer strips as special tokens.
        judge_template: Judge prompt with ``{instruction}``, ``{response_1}``, ``{response_2}``.
        loss_schedule: ``"serl"`` (``alpha = min(progress, alpha_cap)``,
            ``beta = max(1 - alpha, beta_floor)``) or ``"constant"``.
        alpha_cap: Largest Actor-loss weight of the SERL schedule.
        beta_floor: Smallest Judge-loss weight of the SERL schedule.
        actor_loss_weight: Actor-loss weight of the constant schedule.
        judge_loss_weight: Judge-loss weight of the constant schedule.
        judge_micro_batch_size: Most judge rows in one forward/backward pass. A micro-batch tuned
            for GRPO holds ``per_device_train_batch_size`` actor rows and ``(N - 1) * K / 2``
            times as many judge rows; with this set the judge rows are run in chunks, each
            back-propagated before the next (gradients accumulate without synchronisation, so the
            result equals one pass). Not supported under DeepSpeed, nor with ``entropy_coef`` or
            ``top_entropy_quantile < 1`` (TRL takes those per forward pass).

    TRL's ``use_adaptive_entropy`` is refused: its controller would step once per role.
    """

    num_judge_generations: int = field(
        default=2, metadata={"help": "K: judge rollouts per unordered pair (even; half per order)."}
    )  # the smallest K that sees both orders
    max_judge_completion_length: int = field(
        default=256, metadata={"help": "Token limit of a judge rollout."}
    )  # a short justification and the box
    actor_reward: Literal["length_controlled", "copeland"] = field(
        default="length_controlled", metadata={"help": "Actor reward rule."}
    )  # the paper's
    length_band_low: float = field(default=0.8, metadata={"help": "Lower length-ratio bound."})  # paper
    length_band_high: float = field(default=1.2, metadata={"help": "Upper length-ratio bound."})  # paper
    length_band_reference: Literal["loser", "winner"] = field(
        default="loser", metadata={"help": "Whose length the band is drawn around."}
    )  # the authors' rewards_actor
    verdict_format: Literal["boxed", "lenient"] = field(
        default="boxed", metadata={"help": "Which judge outputs count as valid verdicts."}
    )  # reward the format the prompt asks for
    strip_reasoning: bool = field(
        default=True, metadata={"help": "Judge answers without their reasoning."}
    )  # as in the paper
    reasoning_end: str = field(default="</think>", metadata={"help": "Marker closing reasoning."})  # Qwen3
    reasoning_start: str = field(default="<think>", metadata={"help": "Marker opening reasoning."})  # Qwen3
    reasoning_opened_by_prompt: bool = field(
        default=False, metadata={"help": "The chat template opens the reasoning block in the prompt."}
    )  # Qwen3 writes <think> itself
    read_truncated_verdicts: bool = field(
        default=False, metadata={"help": "Read a verdict from a judge rollout stopped at the length limit."}
    )  # an unfinished answer is no verdict (the authors' code reads it)
    judge_template: str = field(default=DEFAULT_JUDGE_TEMPLATE, metadata={"help": "Judge prompt template."})
    loss_schedule: Literal["serl", "constant"] = field(
        default="serl", metadata={"help": "How the Actor and Judge losses are weighted over training."}
    )  # the paper's warm start on the Judge
    alpha_cap: float = field(default=0.5, metadata={"help": "Largest Actor weight (SERL schedule)."})  # paper
    beta_floor: float = field(
        default=0.5, metadata={"help": "Smallest Judge weight (SERL schedule)."}
    )  # paper
    actor_loss_weight: float = field(default=1.0, metadata={"help": "Actor weight (constant schedule)."})
    judge_loss_weight: float = field(default=1.0, metadata={"help": "Judge weight (constant schedule)."})
    judge_micro_batch_size: int | None = field(
        default=None,
        metadata={"help": "Most judge rows in one forward/backward pass (None: all of a micro-batch)."},
    )  # a micro-batch holds (N - 1) * K / 2 judge rows per actor row; this bounds them

    def __post_init__(self) -> None:
        if self.bf16 is None and not self.fp16:
            # TRL turns bf16 on by default, which transformers refuses on a machine without a
            # bf16-capable GPU; default to what the machine supports instead.
            self.bf16 = _bf16_supported()
        try:
            super().__post_init__()
        except ValueError as exc:
            if "bf16" in str(exc):
                raise SERLConfigError(
                    "bf16=True needs a GPU with bf16 support (NVIDIA Ampere or newer); this machine has "
                    "none. Leave bf16 unset (it then follows the machine), set bf16=False, or set "
                    "use_cpu=True to run bf16 on the CPU."
                ) from exc
            raise SERLConfigError(f"invalid training settings: {exc}") from exc
        self._check_serl_fields()

    @classmethod
    def from_grpo_config(cls, args: GRPOConfig) -> SERLConfig:
        """A SERLConfig with every setting of a plain :class:`~trl.GRPOConfig` and SERL's defaults.

        The GRPOConfig is not changed; TRL's resolved values (``steps_per_generation``, ``bf16``,
        ``loss_type``, ...) are taken as they are.

        Raises:
            SERLConfigError: ``args`` is not a GRPOConfig, its batch does not hold whole groups, or
                it turns on a TRL option SERL refuses (``use_adaptive_entropy``).
        """
        if isinstance(args, cls):
            return args
        if not isinstance(args, GRPOConfig):
            raise SERLConfigError(f"args must be a GRPOConfig or SERLConfig, got {type(args).__name__}")
        new = cls.__new__(cls)
        new.__dict__.update(copy.deepcopy(args.__dict__))
        for f in fields(cls):
            if f.name not in new.__dict__:
                setattr(new, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
        new._check_serl_fields()
        return new

    def _check_serl_fields(self) -> None:
        if self.max_judge_completion_length <= 0:
            raise SERLConfigError(
                f"max_judge_completion_length must be positive, got {self.max_judge_completion_length}"
            )
        self.judge_config()  # validates K, band, template, choices
        if self.loss_schedule not in ("serl", "constant"):
            raise SERLConfigError(f"loss_schedule must be 'serl' or 'constant', got {self.loss_schedule!r}")
        jmb = self.judge_micro_batch_size
        if jmb is not None and (not isinstance(jmb, int) or jmb <= 0):
            raise SERLConfigError(f"judge_micro_batch_size must be a positive integer or None, got {jmb!r}")
        if jmb is not None and getattr(self, "deepspeed", None):
            raise SERLConfigError(
                "judge_micro_batch_size is not supported with DeepSpeed (it runs its own backward)"
            )
        if jmb is not None and (
            getattr(self, "entropy_coef", 0.0) or getattr(self, "top_entropy_quantile", 1.0) < 1.0
        ):
            raise SERLConfigError(
                "judge_micro_batch_size cannot be combined with entropy_coef or top_entropy_quantile < 1: "
                "TRL takes the entropy bonus and the entropy quantile per forward pass, so the chunked "
                "judge gradient would differ from one pass"
            )
        if getattr(self, "use_adaptive_entropy", False):
            raise SERLConfigError(
                "use_adaptive_entropy is not supported by SERLTrainer: the actor and judge losses are two "
                "TRL loss calls per micro-batch, so TRL's entropy controller would step twice per optimizer "
                "step (once on the judge rows alone); use a fixed entropy_coef"
            )
        for name in ("alpha_cap", "beta_floor", "actor_loss_weight", "judge_loss_weight"):
            if getattr(self, name) < 0:
                raise SERLConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        local = self.per_device_train_batch_size * int(self.steps_per_generation or 1)
        if local % int(self.num_generations or 1):
            raise SERLConfigError(
                f"per_device_train_batch_size * steps_per_generation = {local} must be a multiple of "
                f"num_generations = {self.num_generations}, so that every process holds whole groups to judge"
            )

    def judge_config(self) -> JudgeConfig:
        """The :class:`~zjulab.serl.config.JudgeConfig` these settings describe.

        Raises:
            SERLConfigError: An invalid K, band, template or choice.
        """
        return JudgeConfig(
            num_judgments=self.num_judge_generations,
            actor_reward=self.actor_reward,
            length_band=(self.length_band_low, self.length_band_high),
            length_band_reference=self.length_band_reference,
            verdict_format=self.verdict_format,
            strip_reasoning=self.strip_reasoning,
            reasoning_end=self.reasoning_end,
            reasoning_start=self.reasoning_start,
            reasoning_opened_by_prompt=self.reasoning_opened_by_prompt,
            read_truncated=self.read_truncated_verdicts,
            judge_template=self.judge_template,
            max_new_tokens=self.max_judge_completion_length,
            temperature=self.temperature,
        )
