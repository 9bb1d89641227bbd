"""Configuration of the curation pipeline."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zjulab.common.io import read_json
from zjulab.conifer.errors import ConiferConfigError

__all__ = ["PipelineConfig"]

ModelSpec = dict[str, Any]


@dataclass
class PipelineConfig:
    """Settings of a :class:`~zjulab.conifer.pipeline.Pipeline` run.

    Args:
        mode: ``"conifer"`` (the paper's method; see
            :func:`~zjulab.conifer.stages.default_stages`) or ``"verifiable"`` (format/number
            variants with IFEval-checkable constraints and a separate internal-feedback call).
        out_dir: Directory for the request cache, stage outputs and statistics.
        num_reframes: Questions written per seed query in the reframing stage.
        num_levels: Difficulty levels of the recombination stage (1 = easiest).
        min_levels: Fewest levels a recombination answer may have (0: all ``num_levels``);
            shorter ladders are kept with levels 1..k.
        min_categories: Fewest constraint categories asked for per question.
        max_categories: Most constraint categories asked for per question (the prompt's
            number; categories the model adds beyond it are kept, as the authors keep them).
        few_shot: Show each structured stage's worked example (one user/assistant exchange)
            before the real prompt; helps models that drift from the JSON shape.
        filters: Run the two model filter stages (first and second filter).
        format_number: Also make format/number variants of each levelled instruction
            (``None``: on in ``"conifer"`` mode, as in the paper; off in ``"verifiable"`` mode).
        format_constraints: Verifiable constraints appended per format/number variant.
        hard_level: Levels at or above this get internal process feedback (0: the top two
            levels, i.e. ``num_levels - 1``; levels 4 and 5 of the paper's five).
        weak_level: Level from which the weak model answers and external feedback is asked
            (0: only the top level ``num_levels``, as in the paper).
        languages: Seed queries whose detected language is not in this list are dropped
            (empty: keep all).
        min_seed_chars: Shorter seed queries are dropped.
        max_seed_chars: Longer seed queries are dropped.
        batch_size: Conversations in one ``generate`` call of an in-process model (a server
            client always gets one conversation per call, so one request fails alone).
        max_in_flight: The one concurrency limit: requests an OpenAI-compatible server sees at
            once (exactly; the client's own ``concurrency`` no longer multiplies it), or
            ``generate`` calls in flight for an in-process model.
        max_structured_retries: Re-asks after an answer that does not parse.
        max_remote_retries: Re-tries of one request after a remote model error (on top of the
            client's own retries).
        retry_backoff: Seconds before the first re-try (doubles each time).
        max_request_failures: Runs in which the server may refuse a request (an HTTP 4xx other
            than 408/409/429, or a body that is not a completion) before later runs stop asking
            it (it is then reported as abandoned; ``retry_abandoned`` asks again). An outage
            (no answer, a timeout, HTTP 408/409/429/5xx) is never counted: those requests are
            asked again in every run until the server answers.
        max_new_tokens: Answer length of the structured stages.
        verdict_max_new_tokens: Answer length of the filter stages (a short JSON verdict).
        answer_max_new_tokens: Answer length of the answer stages.
        temperature: Sampling temperature (0 = greedy).
        guided_json: Structured stages ask for schema-constrained JSON
            (``response_format={"type": "json_schema", ...}``) when the model declares the
            server supports it (``OpenAIChatModel(..., json_schema=True)``: vLLM, SGLang,
            OpenAI); otherwise, or when off, the JSON shape is in the prompt and an answer
            that does not validate is asked again (nothing is repaired).
        salvage_cut_off: Keep what arrived whole of a structured answer that was cut off at
            the token limit (``finish_reason == "length"``, or an unclosed object from a model
            that does not report how it ended): the finished members of the JSON object, and
            the finished items of a list that was cut (questions, levels, steps; a constraint
            category whose options were cut is dropped); and keep a cut-off free-text answer
            as it arrived. Records built from such an answer are marked under ``salvaged``.
            Off by default: a cut-off structured answer is asked again, then set aside, and a
            cut-off free-text answer is set aside.
        seed: Seed of the format/number constraint sampling.
        show_progress: Progress bars (``None``: only on a terminal).
        strong_model: For ``run CONFIG``: how to build the strong model, e.g.
            ``{"kind": "openai", "model": "gpt-4o", "base_url": "..."}`` or
            ``{"kind": "transformers", "model": "Qwen/Qwen2.5-7B-Instruct"}`` or
            ``{"kind": "embedded"}``.
        weak_model: The same for the weak model (empty: no weak-model stages).
        seeds_path: For ``run CONFIG``: the seed file (one query a line, or JSONL with
            ``query``).
        contamination_prompts: Evaluation prompts to guard against (IFEval's
            ``input_data.jsonl``, any JSONL with ``prompt``, or a text file with one a line);
            empty: no guard stage.
        contamination_n: N-gram length of the guard.
        contamination_threshold: Containment of an evaluation prompt at which an instruction is
            flagged.
        contamination_action: ``"drop"`` flagged instructions (counted in the run report) or
            ``"flag"`` them and keep them.
    """

    mode: str = "conifer"
    out_dir: str = "conifer_run"
    num_reframes: int = 3  # the paper's reframing writes a few questions per seed
    num_levels: int = 5  # the paper's five difficulty levels
    min_levels: int = 0  # the paper keeps only complete ladders
    min_categories: int = 3
    max_categories: int = 6
    few_shot: bool = True  # costs one example's tokens per call, saves many unparseable answers
    filters: bool = True  # the paper filters twice
    format_number: bool | None = None
    format_constraints: int = 2
    hard_level: int = 0  # 0: num_levels - 1, i.e. levels 4 and 5 of a five-level ladder
    weak_level: int = 0  # the paper asks the weak model only about the hardest level
    languages: list[str] = field(default_factory=lambda: ["en"])  # the paper keeps English seeds
    min_seed_chars: int = 10  # shorter requests are rarely real questions
    max_seed_chars: int = 2000  # longer ones are pasted documents, not requests
    batch_size: int = 8
    max_in_flight: int = 1  # local models gain nothing from threads; raise it for servers
    max_structured_retries: int = 2
    max_remote_retries: int = 2
    retry_backoff: float = 1.0
    max_request_failures: int = 3
    max_new_tokens: int = 512
    verdict_max_new_tokens: int = 128  # {"keep": ..., "reason": ...} needs few tokens
    answer_max_new_tokens: int = 1024
    temperature: float = 0.0
    guided_json: bool = True
    salvage_cut_off: bool = False
    seed: int = 0
    show_progress: bool | None = None
    strong_model: ModelSpec = field(default_factory=lambda: {"kind": "embedded"})
    weak_model: ModelSpec = field(default_factory=dict)
    seeds_path: str = ""
    contamination_prompts: str = ""
    contamination_n: int = 3
    contamination_threshold: float = 0.3
    contamination_action: str = "drop"

    def __post_init__(self) -> None:
        self._check_types()
        positive = (
            "num_reframes",
            "num_levels",
            "min_categories",
            "max_categories",
            "format_constraints",
            "batch_size",
            "max_in_flight",
            "max_new_tokens",
            "answer_max_new_tokens",
            "verdict_max_new_tokens",
            "max_request_failures",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConiferConfigError(f"{name} must be a positive integer, got {value!r}")
        for name, cap in _CAPS.items():
            if getattr(self, name) > cap:
                raise ConiferConfigError(
                    f"{name} must be at most {cap} (one model answer holds them all), got {getattr(self, name)}"
                )
        if self.min_categories > self.max_categories:
            raise ConiferConfigError(
                f"min_categories={self.min_categories} > max_categories={self.max_categories}"
            )
        if not 0 <= self.min_levels <= self.num_levels:
            raise ConiferConfigError(
                f"min_levels must be in [0, num_levels={self.num_levels}], got {self.min_levels}"
            )
        if not 0 <= self.weak_level <= self.num_levels:
            raise ConiferConfigError(
                f"weak_level must be in [0, num_levels={self.num_levels}], got {self.weak_level}"
            )
        if not isinstance(self.hard_level, int) or isinstance(self.hard_level, bool) or self.hard_level < 0:
            raise ConiferConfigError(f"hard_level must be an integer >= 0, got {self.hard_level!r}")
        if self.hard_level > self.num_levels:
            raise ConiferConfigError(f"hard_level={self.hard_level} > num_levels={self.num_levels}")
        for name in ("max_structured_retries", "max_remote_retries"):
            if getattr(self, name) < 0:
                raise ConiferConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.retry_backoff < 0:
            raise ConiferConfigError(f"retry_backoff must be >= 0, got {self.retry_backoff}")
        if self.temperature < 0:
            raise ConiferConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.min_seed_chars > self.max_seed_chars:
            raise ConiferConfigError(
                f"min_seed_chars={self.min_seed_chars} > max_seed_chars={self.max_seed_chars}"
            )
        if not 0 < self.contamination_threshold <= 1:
            raise ConiferConfigError(
                f"contamination_threshold must be in (0, 1], got {self.contamination_threshold}"
            )
        if self.mode not in ("conifer", "verifiable"):
            raise ConiferConfigError(f"mode must be 'conifer' or 'verifiable', got {self.mode!r}")
        if self.contamination_action not in ("drop", "flag"):
            raise ConiferConfigError(
                f"contamination_action must be 'drop' or 'flag', got {self.contamination_action!r}"
            )
        if (
            isinstance(self.contamination_n, bool)
            or not isinstance(self.contamination_n, int)
            or self.contamination_n < 1
        ):
            raise ConiferConfigError(
                f"contamination_n must be a positive integer, got {self.contamination_n!r}"
            )
        for name in ("strong_model", "weak_model"):
            spec = getattr(self, name)
            kind = spec.get("kind") if spec else None
            if spec and kind not in _MODEL_KINDS:
                raise ConiferConfigError(f"{name}.kind must be one of {sorted(_MODEL_KINDS)}, got {kind!r}")

    def _check_types(self) -> None:
        """Refuse values of the wrong type (a JSON ``"false"`` is not ``False``)."""
        bools = ("few_shot", "filters", "guided_json", "salvage_cut_off")
        floats = ("retry_backoff", "temperature", "contamination_threshold")
        strs = ("mode", "out_dir", "seeds_path", "contamination_prompts", "contamination_action")
        for name in bools:
            if not isinstance(getattr(self, name), bool):
                raise ConiferConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("format_number", "show_progress"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConiferConfigError(f"{name} must be true, false or null, got {value!r}")
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConiferConfigError(f"{name} must be a number, got {value!r}")
        for name in strs:
            if not isinstance(getattr(self, name), str):
                raise ConiferConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in (
            "min_levels",
            "weak_level",
            "seed",
            "min_seed_chars",
            "max_seed_chars",
            "max_structured_retries",
            "max_remote_retries",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConiferConfigError(f"{name} must be an integer, got {value!r}")
        if not isinstance(self.languages, list) or not all(isinstance(x, str) for x in self.languages):
            raise ConiferConfigError(f"languages must be a list of language codes, got {self.languages!r}")
        from zjulab.conifer.language import supported_languages

        unknown = [x for x in self.languages if x not in supported_languages()]
        if unknown:
            raise ConiferConfigError(
                f"languages: {unknown} never detected (every seed would be dropped); known codes: "
                f"{', '.join(sorted(supported_languages()))}"
            )
        for name in ("strong_model", "weak_model"):
            if not isinstance(getattr(self, name), dict):
                raise ConiferConfigError(f"{name} must be an object, got {getattr(self, name)!r}")

    @property
    def format_number_enabled(self) -> bool:
        """Whether format/number variants are made (``format_number``, or the mode's default)."""
        return self.mode == "conifer" if self.format_number is None else bool(self.format_number)

    @property
    def effective_hard_level(self) -> int:
        """``hard_level``, or ``num_levels - 1`` (at least 1) when it is 0."""
        return self.hard_level or max(1, self.num_levels - 1)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what the stages produce (checked on resume)."""
        skip = {
            "out_dir",
            "batch_size",
            "max_in_flight",
            "show_progress",
            "max_remote_retries",
            "retry_backoff",
            "max_request_failures",
        }
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Build from a plain dict, rejecting unknown keys.

        Raises:
            ConiferConfigError: Unknown keys or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConiferConfigError(f"unknown config key(s) {unknown}; known: {sorted(names)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PipelineConfig:
        """Read a JSON config file (relative ``out_dir``/``seeds_path`` resolve against it).

        Raises:
            ConiferConfigError: Unknown keys or invalid values.
            StoreError: The file is missing or not JSON.
        """
        p = Path(path)
        data = read_json(p)
        if not isinstance(data, dict):
            raise ConiferConfigError(f"{p}: a config must be a JSON object")
        for key in ("out_dir", "seeds_path", "contamination_prompts"):
            if data.get(key) and not Path(data[key]).is_absolute():
                data[key] = str(p.parent / data[key])
        return cls.from_dict(data)


#: Upper bounds of the settings one model answer must hold: the paper asks for 5 levels, a few
#: questions per seed and a handful of constraint categories.
_CAPS = {"num_levels": 20, "num_reframes": 50, "max_categories": 50, "min_categories": 50}

_MODEL_KINDS: frozenset[Literal["openai", "transformers", "embedded"]] = frozenset(
    {"openai", "transformers", "embedded"}
)
