"""The curation stages of Conifer, each a typed step with its own prompt and output schema.

A stage turns one input record (a plain dict) into zero or more output records. Model stages
build one conversation per record, read the answer through
:func:`zjulab.common.structured.generate_structured` (or as free text for answers) and map the
parsed value to output records in :meth:`ModelStage.apply`. An answer that cannot be used
raises :class:`Rejection` there and the record is set aside with the reason; a model verdict
to drop a record makes it *filtered* (an empty output list).

Records carry these fields as they move down the pipeline: ``id`` (unique, the checkpoint
key), ``seed``, ``query`` (the reframed question), ``constraints``, ``level``, ``kind``
(``"general"`` or ``"format_number"``), ``instruction``, ``checks`` (verifiable constraints),
``answer``, ``process`` (internal feedback), ``weak_answer``, ``follows`` and ``feedback``
(external feedback).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass as plain_dataclass
from dataclasses import field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ArgsKwargs

from zjulab.common.protocols import Conversation
from zjulab.conifer import prompts
from zjulab.conifer.checkers import CheckerRegistry, default_registry
from zjulab.conifer.config import PipelineConfig
from zjulab.conifer.errors import ConiferInputError
from zjulab.conifer.language import detect_language

__all__ = [
    "AnswerStage",
    "ConstraintStage",
    "ContaminationStage",
    "ExternalFeedbackStage",
    "FilterStage",
    "FormatNumberRewriteStage",
    "FormatNumberStage",
    "IFEvalAnswerStage",
    "InternalFeedbackStage",
    "LocalStage",
    "ModelStage",
    "RecombineStage",
    "ReframeStage",
    "Dropped",
    "Rejection",
    "SeedStage",
    "Stage",
    "WeakAnswerStage",
    "CutOff",
    "cut_off_members",
    "default_stages",
]

logger = logging.getLogger(__name__)

Record = dict[str, Any]


class Rejection(Exception):
    """Raised by a stage when a parsed answer cannot be used; the record is set aside."""


class Dropped(Exception):
    """Raised by a local stage to drop a record on purpose (counted as filtered, with the reason)."""


# ------------------------------------------------------------------------ output schemas
#
# Each schema is a pydantic dataclass validated strictly (no "3" for 3, no coercion). Its JSON
# schema, sent to the server for guided decoding and shown to the model when it is asked
# again, is the canonical shape only. Besides that shape each accepts the few documented
# alternatives the authors' own code accepts or that models drift into (the authors'
# numbered keys, a bare list, a bare mapping, yes/no written as a string); the content is
# taken as written, never repaired, and the alternative used is named in ``shape_note`` (the
# pipeline copies it into the records under ``shape``). Anything else is refused with the
# reason, and the pipeline sets the record aside with it and the raw answer.

_YES_NO = {"yes": True, "true": True, "no": False, "false": False}
_NUMBERED_QUESTION = re.compile(r"^\s*(?:instruction|question|q)\s*[_ #-]?\s*(\d+)\s*$", re.IGNORECASE)
_NUMBERED_LEVEL = re.compile(r"^\s*(?:difficulty|level|version)?\s*[_ #-]?\s*(\d+)\s*$", re.IGNORECASE)


def _as_dict(cls: Any, data: Any) -> Any:
    """Positional construction (``Levels(["a"])``) as the dict the alternatives look at."""
    if isinstance(data, ArgsKwargs):
        names = [f.name for f in dataclasses.fields(cls) if f.name != "shape_note"]
        return {**dict(zip(names, data.args)), **(data.kwargs or {})}
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k != "shape_note"}  # only the validator sets it
    return data


def _numbered(
    mapping: dict[str, Any], pattern: re.Pattern[str], what: str, *, consecutive: bool
) -> list[Any] | None:
    """Values of an object whose every key is numbered (``"Difficulty 2"``), in number order.

    ``None`` when some key is not numbered (not this shape). Raises ValueError when numbers
    repeat, or (``consecutive``) are not exactly 1..k.
    """
    if not mapping:
        return None
    numbers: list[int] = []
    for key in mapping:
        m = pattern.match(str(key))
        if m is None:
            return None
        numbers.append(int(m.group(1)))
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{what} keys repeat a number: {list(mapping)}")
    if consecutive and sorted(numbers) != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{what} keys must be numbered 1 to {len(numbers)}, got {list(mapping)}")
    return [v for _, v in sorted(zip(numbers, mapping.values()), key=lambda nv: nv[0])]


def _yes_no(value: Any, field_name: str) -> tuple[Any, str]:
    if isinstance(value, str) and value.strip().lower() in _YES_NO:
        return _YES_NO[value.strip().lower()], f"{field_name} written as the string {value.strip()!r}"
    return value, ""


def _schema(description: str) -> Any:
    """A pydantic dataclass whose JSON schema carries only ``description`` (not the docstring)."""
    return dataclass(config=ConfigDict(json_schema_extra={"description": description}))


class _Shaped:
    """Mixin: the wrap validator that maps the documented alternatives to the canonical shape."""

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:  # pragma: no cover - overridden
        return data, ""

    @model_validator(mode="wrap")
    @classmethod
    def _accept_shapes(cls, data: Any, handler: Any) -> Any:
        canonical, note = cls._alternative(_as_dict(cls, data))
        obj = handler(canonical)
        obj.shape_note = note
        return obj


@_schema("Reframed questions.")
class Questions(_Shaped):
    """Reframed questions: ``{"questions": [...]}``.

    Also accepted: a bare list of strings; an object whose every key is numbered
    (``{"instruction1": ..., "instruction2": ...}``, the authors' reframing output, taken in
    number order); ``{}`` (the authors' "no question can be written": no questions).
    """

    questions: list[str]
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        if isinstance(data, list):
            return {"questions": data}, "a bare list of questions"
        if isinstance(data, dict) and "questions" not in data:
            if not data:
                return {"questions": []}, "an empty object (the model wrote no question)"
            values = _numbered(data, _NUMBERED_QUESTION, "question", consecutive=False)
            if values is not None:
                return {"questions": values}, "numbered keys (instruction1, instruction2, ...)"
        if isinstance(data, dict) and isinstance(data.get("questions"), dict):
            values = _numbered(data["questions"], _NUMBERED_QUESTION, "question", consecutive=False)
            if values is not None:
                return {**data, "questions": values}, "questions as an object with numbered keys"
        return data, ""


@_schema("A keep/drop decision with its reason.")
class Verdict(_Shaped):
    """A keep/drop decision with its reason: ``{"keep": true, "reason": "..."}``.

    Also accepted: ``keep`` written as the string ``"yes"``/``"no"``/``"true"``/``"false"``
    (any case); a bare JSON ``true``/``false``.
    """

    keep: bool
    reason: str = ""
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        if isinstance(data, bool):
            return {"keep": data}, "a bare true/false"
        if isinstance(data, dict) and "keep" in data:
            keep, note = _yes_no(data["keep"], "keep")
            return {**data, "keep": keep}, note
        return data, ""


_OPTION_SPLIT = re.compile(r"\s*(?:[;；，、]|,(?=\s))\s*")


def _options(name: str, value: Any, notes: list[str]) -> dict[str, list[str]]:
    """The options of one category (a nested object gives one category per subcategory)."""
    if isinstance(value, dict):
        out: dict[str, list[str]] = {}
        for sub, v in value.items():
            if isinstance(v, dict):
                raise ValueError(f"category {name!r}: subcategory {sub!r} nests another object")
            out.update(_options(f"{name}: {_clean(sub)}", v, notes))
        notes.append(f"subcategories of {name!r} as categories of their own")
        return out
    if isinstance(value, str):
        items = [p for p in _OPTION_SPLIT.split(value.strip()) if p]
        notes.append(f"options of {name!r} written as one string")
    elif isinstance(value, list):
        items = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ValueError(
                    f"category {name!r}: option {json.dumps(item, ensure_ascii=False)[:60]} is not text"
                )
            items.append(_clean(item) if isinstance(item, str) else json.dumps(item))
    else:
        raise ValueError(
            f"category {name!r}: options must be a list or a string, got {json.dumps(value)[:60]}"
        )
    return {name: [_clean(x) for x in items if _clean(x)]}


def normalize_categories(value: Any, notes: list[str] | None = None) -> dict[str, list[str]]:
    """Category -> options from the accepted answer shapes; anything else raises ValueError.

    Accepted: ``{"name": [options]}`` (options are strings or numbers); ``{"name": "a; b"}``
    (one string, split at ``;``, ``；``, ``，``, ``、`` and at a comma followed by a space, so
    ``"1,000 words"`` stays whole); ``{"name": {"sub": [options]}}`` (one category
    ``"name: sub"`` per subcategory, as the authors' code reads nested objects); a list of
    ``{"name" | "category" | "type" | "kind": ..., "options" | "values" | "examples" |
    "choices": [...]}``; a list of strings ``"Name: a, b"``. Categories without options are
    left out (named in ``notes``); a list item of another shape is refused.
    """
    notes = [] if notes is None else notes
    out: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_options(_clean(k), v, notes))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                name = next((item[k] for k in ("name", "category", "type", "kind") if k in item), None)
                opts = next(
                    (item[k] for k in ("options", "values", "examples", "choices") if k in item), None
                )
                if name is None or opts is None:
                    raise ValueError(f"category item without a name and options: {json.dumps(item)[:80]}")
                out.update(_options(_clean(name), opts, []))
            elif isinstance(item, str):  # "Name: a, b"; a bare name is a category without options
                name, _, rest = item.partition(":")
                out.update(_options(_clean(name), rest, []))
            else:
                raise ValueError(
                    f"category item {json.dumps(item, ensure_ascii=False)[:60]} is neither "
                    "an object with name and options nor a string 'Name: options'"
                )
    else:
        raise ValueError(f"categories must be an object or a list, got {json.dumps(value)[:60]}")
    empty = [k for k, v in out.items() if not k or not v]
    if empty:
        notes.append(f"categories without options left out: {empty}")
    return {k: v for k, v in out.items() if k and v}


@_schema("Constraint categories, each with concrete options.")
class Categories(_Shaped):
    """Constraint categories with concrete options: ``{"categories": {"Audience": [...], ...}}``.

    Also accepted: the bare mapping without ``"categories"`` (the authors' constraint
    output), and every shape :func:`normalize_categories` reads, inside or without the wrapper;
    when the wrapper holds no category with options, the members beside it are the categories.
    ``{}`` is the authors' "no constraint applies" (no categories).
    """

    categories: dict[str, list[str]]
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        notes: list[str] = []
        if isinstance(data, dict) and "categories" in data:
            inner = data["categories"]
            if isinstance(inner, list):
                notes.append("categories as a list")
        elif isinstance(data, (dict, list)):
            inner = data
            notes.append(
                "an empty object (the model found no constraint)"
                if data == {}
                else "a bare mapping of categories (no 'categories' wrapper)"
                if isinstance(data, dict)
                else "a bare list of categories"
            )
        else:
            return data, ""
        found = normalize_categories(inner, notes)
        siblings = {k: v for k, v in data.items() if k != "categories"} if isinstance(data, dict) else {}
        if not found and "categories" in data and siblings:
            # the wrapper holds no category with options and the categories stand beside it
            # (a small model's habit; the authors' code reads every top-level member)
            found = normalize_categories(siblings, notes)
            notes.append("categories beside the 'categories' key")
        return {"categories": found}, "; ".join(notes)


@_schema("Instructions from easiest to hardest.")
class Levels(_Shaped):
    """Instructions from easiest to hardest: ``{"levels": [...]}``.

    Also accepted: a bare list; an object whose keys number the levels 1..k
    (``{"Difficulty 1": ..., "Difficulty 2": ...}``, the authors' recombination output, or
    ``"level 1"``, ``"1"``), directly or under ``"levels"``; keys must be exactly 1..k.
    """

    levels: list[str]
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        if isinstance(data, list):
            return {"levels": data}, "a bare list of levels"
        if isinstance(data, dict) and "levels" not in data:
            values = _numbered(data, _NUMBERED_LEVEL, "level", consecutive=True)
            if values is not None:
                return {"levels": values}, "levels as numbered keys (Difficulty 1, Difficulty 2, ...)"
        if isinstance(data, dict) and isinstance(data.get("levels"), dict):
            values = _numbered(data["levels"], _NUMBERED_LEVEL, "level", consecutive=True)
            if values is not None:
                return {**data, "levels": values}, "levels as an object with numbered keys"
        return data, ""


@_schema("Internal process feedback: how each requirement is met.")
class Steps(_Shaped):
    """Internal process feedback, how each requirement is met: ``{"steps": [...]}``.

    Also accepted: a bare list of strings.
    """

    steps: list[str]
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        if isinstance(data, list):
            return {"steps": data}, "a bare list of steps"
        return data, ""


@_schema("External process feedback on a weak answer.")
class Judgement(_Shaped):
    """External process feedback on a weak answer: ``{"follows": false, "feedback": "..."}``.

    Also accepted: ``follows`` written as the string ``"yes"``/``"no"``/``"true"``/``"false"``.
    """

    follows: bool
    feedback: str = ""
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        if isinstance(data, dict) and "follows" in data:
            follows, note = _yes_no(data["follows"], "follows")
            return {**data, "follows": follows}, note
        return data, ""


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


@plain_dataclass
class CutOff:
    """What arrived whole of a JSON object cut off mid-answer (see :func:`cut_off_members`).

    Attributes:
        members: The members whose values arrived complete, plus the member that was cut: a
            list keeps the items that arrived whole, an object the members that did.
        cut: The name of the member that was cut (its value in ``members`` is partial), else
            ``None`` (the cut fell between members).
        inner: For a cut object member, its own :class:`CutOff`.
    """

    members: dict[str, Any]
    cut: str | None = None
    inner: CutOff | None = None


def _skip(raw: str, pos: int) -> int:
    return _SPACE.match(raw, pos).end()  # type: ignore[union-attr]


def _object_prefix(raw: str, start: int) -> CutOff | None:
    members: dict[str, Any] = {}
    pos = start + 1
    while True:
        pos = _skip(raw, pos)
        if raw[pos : pos + 1] == "}":
            return None  # the object closed: not cut off
        try:
            key, pos = _DECODER.raw_decode(raw, pos)
        except ValueError:
            return CutOff(members)
        pos = _skip(raw, pos)
        if not isinstance(key, str) or raw[pos : pos + 1] != ":":
            return CutOff(members)
        pos = _skip(raw, pos + 1)
        try:
            value, pos = _DECODER.raw_decode(raw, pos)
        except ValueError:
            members.pop(key, None)
            if raw[pos : pos + 1] == "{":
                inner = _object_prefix(raw, pos)
                if inner is None:  # a closed object that still did not parse: not a cut
                    return CutOff(members)
                members[key] = inner.members
                return CutOff(members, cut=key, inner=inner)
            if raw[pos : pos + 1] != "[":
                return CutOff(members)
            items: list[Any] = []
            p = pos + 1
            while True:
                p = _skip(raw, p)
                try:
                    item, p = _DECODER.raw_decode(raw, p)
                except ValueError:
                    break
                items.append(item)
                p = _skip(raw, p)
                if raw[p : p + 1] != ",":
                    break
                p += 1
            members[key] = items
            return CutOff(members, cut=key)
        members.pop(key, None)  # a repeated key: the last one counts, as in json.loads
        members[key] = value
        pos = _skip(raw, pos)
        if raw[pos : pos + 1] == "}":
            return None
        if raw[pos : pos + 1] != ",":
            return CutOff(members)
        pos += 1


def cut_off_members(raw: str) -> CutOff | None:
    """The complete members of the first JSON object in ``raw`` when that object is cut off.

    Nothing is invented or patched: a member is kept only when its key and value parsed as
    written; a list or object value that was cut keeps the items or members that parsed before
    the cut. Returns ``None`` when there is no object or the object is complete (then the answer
    had another problem and salvaging is not the answer).
    """
    start = raw.find("{")
    return None if start < 0 else _object_prefix(raw, start)


def _salvaged_strings(raw: str, key: str) -> list[str] | None:
    cut = cut_off_members(raw)
    if cut is None:
        return None
    value = cut.members.get(key)
    if not isinstance(value, list):
        return None
    items = [x for x in value if isinstance(x, str) and x.strip()]
    return items or None


# ------------------------------------------------------------------------------- stages


class Stage(ABC):  # noqa: B024 - a base with defaults; LocalStage/ModelStage add the abstract parts
    """One step of the pipeline.

    Attributes:
        name: Used in file names and statistics; unique within a pipeline.
    """

    name: ClassVar[str] = "stage"

    def select(self, record: Record) -> bool:
        """Whether this stage works on ``record``; others pass through unchanged."""
        return True

    def key(self, record: Record) -> str:
        """The checkpoint key of an input record."""
        return str(record["id"])


class LocalStage(Stage):
    """A stage that needs no model."""

    @abstractmethod
    def process(self, record: Record) -> list[Record]:
        """Output records of one input record (may raise :class:`Rejection`)."""


class ModelStage(Stage):
    """A stage that asks a chat model once per record.

    Attributes:
        role: Which model answers: ``"strong"`` or ``"weak"``.
        schema: Output schema for structured answers; ``None`` for free text.
        answer_length: Which length limit applies: ``"structured"``, ``"verdict"`` (short
            keep/drop answers) or ``"answer"``.
    """

    role: ClassVar[Literal["strong", "weak"]] = "strong"
    schema: ClassVar[Any] = None
    #: An optional stage passes its input through when it fails (the record keeps, under
    #: ``lacks``, the stage name and the reason) instead of dropping it.
    optional: ClassVar[bool] = False
    answer_length: ClassVar[Literal["structured", "verdict", "answer"]] = "structured"
    #: A free-text answer cut off at the token limit is kept (marked under ``cut_off``) instead
    #: of being set aside; only benchmark answers, which are scored as they came.
    keeps_cut_off_text: ClassVar[bool] = False

    #: A worked example ``(prompt, ideal answer)`` shown before the real prompt when
    #: ``few_shot`` is on; it pins the JSON shape for models that drift into prose.
    example: ClassVar[tuple[str, str] | None] = None

    def __init__(self, template: str | None = None, *, few_shot: bool = False) -> None:
        self.template = template
        self.few_shot = few_shot

    @abstractmethod
    def prompt(self, record: Record) -> str:
        """The user message for ``record``."""

    def salvage(self, raw: str) -> Any | None:
        """A parsed value from the complete part of an answer cut off at the token limit.

        Used only with ``PipelineConfig.salvage_cut_off``; ``None`` (the default) means the
        stage has nothing to salvage and the answer is set aside as unparseable.
        """
        return None

    def conversation(self, record: Record) -> Conversation:
        """The conversation asked for ``record`` (the worked example first, if enabled)."""
        conv: Conversation = []
        if self.few_shot and self.example is not None:
            conv += [
                {"role": "user", "content": self.example[0]},
                {"role": "assistant", "content": self.example[1]},
            ]
        return [*conv, {"role": "user", "content": self.prompt(record)}]

    @abstractmethod
    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """Output records from the parsed answer (raise :class:`Rejection` if unusable)."""


def _clean(text: Any) -> str:
    return " ".join(str(text).split())


def _child(record: Record, suffix: str, **updates: Any) -> Record:
    out = dict(record)
    out.update(updates)
    out["id"] = f"{record['id']}-{suffix}"
    return out


class SeedStage(LocalStage):
    """Stage 1: seed queries, with length and language filters and de-duplication.

    Input records are ``{"id", "seed"}`` (see :func:`~zjulab.conifer.pipeline.load_seeds`).
    """

    name = "seeds"

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config

    def process(self, record: Record) -> list[Record]:
        """Keep the seed when it passes the filters (rejections are set aside with the reason)."""
        text = str(record.get("seed", "")).strip()
        if not (self.config.min_seed_chars <= len(text) <= self.config.max_seed_chars):
            raise Rejection(
                f"seed length {len(text)} outside [{self.config.min_seed_chars}, {self.config.max_seed_chars}]"
            )
        if self.config.languages:
            lang = detect_language(text)
            if lang not in self.config.languages:
                raise Rejection(f"seed language {lang!r} not in {self.config.languages}")
        return [{"id": record["id"], "seed": text}]


class ReframeStage(ModelStage):
    """Stage 2: reframe a seed query into questions that admit constraints."""

    name = "reframe"
    schema = Questions

    example = (
        prompts.REFRAME.format(seed="my basil keeps dying, what am I doing wrong", n=2),
        '{"questions": ["What conditions does basil need to grow well indoors?", '
        '"Which mistakes most often kill potted herbs, and how can they be avoided?"]}',
    )

    def __init__(
        self, num_questions: int = 3, template: str | None = None, *, few_shot: bool = False
    ) -> None:
        super().__init__(template, few_shot=few_shot)
        self.num_questions = num_questions

    def prompt(self, record: Record) -> str:
        """Ask for ``num_questions`` reframed questions."""
        return (self.template or prompts.REFRAME).format(seed=record["seed"], n=self.num_questions)

    def salvage(self, raw: str) -> Any | None:
        """The questions that arrived whole."""
        items = _salvaged_strings(raw, "questions")
        return Questions(items) if items else None

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """One record per distinct non-empty question (at most ``num_questions``)."""
        seen: set[str] = set()
        out: list[Record] = []
        for q in parsed.questions:
            q = _clean(q)
            if q and q.lower() not in seen:
                seen.add(q.lower())
                out.append(_child(record, f"q{len(out) + 1}", query=q))
        if not out:
            note = getattr(parsed, "shape_note", "")
            raise Rejection("no question in the answer" + (f" ({note})" if note else ""))
        return out[: self.num_questions]


class FilterStage(ModelStage):
    """Stages 3 and 6: the model keeps or drops each question (or instruction).

    Args:
        field: The record field judged: ``"query"`` (first filter) or ``"instruction"``
            (second filter).
        template: Prompt override.
    """

    schema = Verdict
    answer_length = "verdict"

    def __init__(
        self,
        field: Literal["query", "instruction"] = "query",
        template: str | None = None,
        *,
        few_shot: bool = False,
    ) -> None:
        super().__init__(template, few_shot=few_shot)
        self.field = field
        self.name = "filter_query" if field == "query" else "filter_instruction"  # type: ignore[misc]
        default = prompts.FILTER_QUERY if field == "query" else prompts.FILTER_INSTRUCTION
        self.example = (  # type: ignore[misc]
            default.format(**{field: "What conditions does basil need to grow well indoors?"}),
            '{"keep": true, "reason": "clear and answerable; light, water and soil can be constrained"}',
        )

    def prompt(self, record: Record) -> str:
        """Ask for a keep/drop verdict."""
        default = prompts.FILTER_QUERY if self.field == "query" else prompts.FILTER_INSTRUCTION
        return (self.template or default).format(**{self.field: record[self.field]})

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record (with the reason) when kept, nothing when dropped."""
        if not parsed.keep:
            return []
        return [dict(record, **{f"{self.name}_reason": _clean(parsed.reason)})]


class ConstraintStage(ModelStage):
    """Stage 4: constraint generation, a mapping category -> options."""

    name = "constraints"
    schema = Categories

    example = (
        prompts.CONSTRAINTS.format(
            query="What conditions does basil need to grow well indoors?", min_categories=2, max_categories=3
        ),
        '{"categories": {"Growing setup": ["windowsill", "grow light", "hydroponics"], '
        '"Audience": ["first-time gardeners", "experienced growers"], '
        '"Format": ["a checklist", "under 100 words"]}}',
    )

    def __init__(
        self,
        min_categories: int = 3,
        max_categories: int = 6,
        template: str | None = None,
        *,
        few_shot: bool = False,
    ) -> None:
        super().__init__(template, few_shot=few_shot)
        self.min_categories = min_categories
        self.max_categories = max_categories

    def prompt(self, record: Record) -> str:
        """Ask for constraint categories and options."""
        return (self.template or prompts.CONSTRAINTS).format(
            query=record["query"], min_categories=self.min_categories, max_categories=self.max_categories
        )

    def salvage(self, raw: str) -> Any | None:
        """The categories whose options arrived whole.

        Small models often put categories next to ``"categories"`` instead of inside it; those
        members count as categories too. A category whose option list was cut is dropped.
        """
        cut = cut_off_members(raw)
        if cut is None:
            return None
        members = {k: v for k, v in cut.members.items() if k != cut.cut}
        if cut.cut == "categories" and cut.inner is not None:
            members["categories"] = {k: v for k, v in cut.inner.members.items() if k != cut.inner.cut}
        inner = members.pop("categories", None)
        try:
            if isinstance(inner, dict):
                found = normalize_categories(inner)
            else:
                found = normalize_categories(inner) if isinstance(inner, list) else {}
                found.update(normalize_categories(members))
        except ValueError:  # what arrived is not a shape the stage reads: nothing to salvage
            return None
        return Categories(found) if found else None

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record with every category the model wrote; rejected when none has an option.

        ``max_categories`` is the number asked for, not a cut: the authors pass every category
        of the answer to the recombination (their samples hold six to eight per question).
        """
        cats = dict(parsed.categories)
        if not cats:
            note = getattr(parsed, "shape_note", "")
            raise Rejection("no constraint category with options" + (f" ({note})" if note else ""))
        return [dict(record, constraints=cats)]


def format_constraints(constraints: dict[str, list[str]]) -> str:
    """Constraint categories as prompt lines ``- Category: a; b``."""
    return "\n".join(f"- {k}: {'; '.join(v)}" for k, v in constraints.items())


class RecombineStage(ModelStage):
    """Stage 5: recombine constraints into instructions of levels 1..``num_levels``."""

    name = "recombine"
    schema = Levels

    def __init__(
        self,
        num_levels: int = 5,
        template: str | None = None,
        *,
        few_shot: bool = False,
        min_levels: int | None = None,
    ) -> None:
        super().__init__(template, few_shot=few_shot)
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or not 1 <= num_levels <= 20:
            raise ConiferInputError(f"num_levels must be an integer in [1, 20], got {num_levels!r}")
        self.num_levels = num_levels
        self.min_levels = num_levels if min_levels is None else min_levels
        ladder = [
            "For a first-time gardener, what does basil need to grow indoors?",
            "For a first-time gardener with only a windowsill, what does basil need to grow indoors? Use a checklist.",
            "For a first-time gardener with a windowsill and no grow light, what does basil need to grow indoors "
            "in winter? Use a checklist of under 100 words.",
            "For an experienced grower comparing a windowsill with a grow light, what does basil need indoors in "
            "winter, and which setup gives more leaves? Use a checklist of under 100 words.",
            "For an experienced grower comparing windowsill, grow-light and hydroponic setups, what does basil need "
            "indoors in winter, which setup yields most, and what does each cost? Answer as a checklist of under "
            "100 words with one line per setup.",
        ]
        picks = [ladder[round(i * (len(ladder) - 1) / max(num_levels - 1, 1))] for i in range(num_levels)]
        self.example = (  # type: ignore[misc]
            prompts.RECOMBINE.format(
                query="What conditions does basil need to grow well indoors?",
                constraints="- Growing setup: windowsill; grow light; hydroponics\n"
                "- Audience: first-time gardeners; experienced growers\n- Format: a checklist; under 100 words",
                levels=num_levels,
            ),
            json.dumps({"levels": picks}),
        )

    def prompt(self, record: Record) -> str:
        """Ask for ``num_levels`` instructions of growing difficulty."""
        return (self.template or prompts.RECOMBINE).format(
            query=record["query"],
            constraints=format_constraints(record["constraints"]),
            levels=self.num_levels,
        )

    def salvage(self, raw: str) -> Any | None:
        """The levels that arrived whole (``min_levels`` still applies)."""
        items = _salvaged_strings(raw, "levels")
        return Levels(items) if items else None

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """One record per level; rejected unless ``min_levels`` to ``num_levels`` distinct instructions."""
        levels = [x for x in (_clean(x) for x in parsed.levels) if x]
        if not self.min_levels <= len(levels) <= self.num_levels:
            want = (
                str(self.num_levels)
                if self.min_levels == self.num_levels
                else f"{self.min_levels}-{self.num_levels}"
            )
            raise Rejection(f"expected {want} non-empty levels, got {len(levels)}")
        if len({x.lower() for x in levels}) != len(levels):
            raise Rejection("levels repeat each other")
        return [
            _child(record, f"L{i}", level=i, kind="general", instruction=text, checks=[])
            for i, text in enumerate(levels, 1)
        ]


@plain_dataclass(frozen=True)
class _Template:
    id: str
    text: str
    choices: dict[str, Sequence[Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


# Verifiable constraints appended by the format/number stage; each maps to a checker.
FORMAT_NUMBER_TEMPLATES: tuple[_Template, ...] = (
    _Template(
        "length_constraints:number_words",
        "Answer in fewer than {num_words} words.",
        {"num_words": (80, 120, 200)},
        {"relation": "less than"},
    ),
    _Template(
        "length_constraints:number_sentences",
        "Use at least {num_sentences} sentences.",
        {"num_sentences": (3, 5)},
        {"relation": "at least"},
    ),
    _Template(
        "detectable_format:number_bullet_lists",
        "Use exactly {num_bullets} bullet points, each a line starting with '* '.",
        {"num_bullets": (3, 4, 5)},
    ),
    _Template(
        "length_constraints:number_paragraphs",
        "Write exactly {num_paragraphs} paragraphs separated by the divider ***.",
        {"num_paragraphs": (2, 3)},
    ),
    _Template(
        "detectable_format:number_highlighted_sections",
        "Highlight at least {num_highlights} key phrases with single asterisks, like *this*.",
        {"num_highlights": (2, 3)},
    ),
    _Template("detectable_format:title", "Begin with a title in double angular brackets, like <<title>>."),
    _Template("punctuation:no_comma", "Do not use any commas."),
    _Template(
        "detectable_content:postscript",
        "End with a postscript that starts with {postscript_marker}",
        {"postscript_marker": ("P.S.",)},
    ),
    _Template(
        "startend:end_checker",
        'Finish with the exact sentence "{end_phrase}"',
        {"end_phrase": ("Is there anything else I can help with?", "Hope this helps.")},
    ),
    _Template("change_case:english_lowercase", "Write the whole answer in lowercase letters."),
)


class FormatNumberStage(LocalStage):
    """Stage 5b: format/number variants with verifiable constraints.

    Each general instruction is copied with ``count`` constraints drawn (deterministically, from
    the record id and ``seed``) from :data:`FORMAT_NUMBER_TEMPLATES` and appended as
    ``"The answer must follow these constraints: ..."``; ``checks`` records the checker ids and
    arguments, so the answer stage can verify the answer.
    """

    name = "format_number"

    def __init__(
        self, count: int = 2, seed: int = 0, templates: Sequence[_Template] = FORMAT_NUMBER_TEMPLATES
    ) -> None:
        if not 0 < count <= len(templates):
            raise ConiferInputError(f"count must be in [1, {len(templates)}], got {count}")
        self.count = count
        self.seed = seed
        self.templates = tuple(templates)
        registry = default_registry()
        for tpl in self.templates:  # every argument a template can draw must be valid for its checker
            for key, values in tpl.choices.items():
                for value in values:
                    if tpl.id in registry:
                        registry.validate(
                            tpl.id, {**tpl.fixed, **{k: v[0] for k, v in tpl.choices.items()}, key: value}
                        )

    def select(self, record: Record) -> bool:
        """Only general instructions get variants."""
        return record.get("kind") == "general"

    def process(self, record: Record) -> list[Record]:
        """The record itself and its format/number variant."""
        digest = hashlib.sha256(f"{self.seed}:{record['id']}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        picked = rng.sample(self.templates, self.count)
        texts, checks = [], []
        for tpl in picked:
            kwargs = {k: rng.choice(list(v)) for k, v in tpl.choices.items()}
            kwargs.update(tpl.fixed)
            texts.append(tpl.text.format(**kwargs))
            checks.append({"id": tpl.id, "kwargs": kwargs})
        variant = _child(
            record,
            "fn",
            kind="format_number",
            instruction=f"{record['instruction']} The answer must follow these constraints: {' '.join(texts)}",
            checks=checks,
        )
        return [record, variant]


class ContaminationStage(LocalStage):
    """Drop (or flag) instructions that contain an evaluation prompt (see :class:`ContaminationGuard`).

    Args:
        guard: The guard, indexed on the evaluation prompts (e.g. IFEval's).
        action: ``"drop"`` (the default: the record is filtered, the reason names the prompt)
            or ``"flag"`` (kept, with ``contamination = {"prompt_index", "containment"}``).
        field: The record field checked.
    """

    name = "contamination"

    def __init__(
        self, guard: Any, action: Literal["drop", "flag"] = "drop", field: str = "instruction"
    ) -> None:
        if action not in ("drop", "flag"):
            raise ConiferInputError(f"contamination action must be 'drop' or 'flag', got {action!r}")
        self.guard = guard
        self.action = action
        self.field = field

    def select(self, record: Record) -> bool:
        """Records that carry the checked field."""
        return bool(record.get(self.field))

    def process(self, record: Record) -> list[Record]:
        """The record, unless it contains an evaluation prompt (then dropped or flagged)."""
        j, score = self.guard.best_overlap(str(record[self.field]))
        if score < self.guard.threshold:
            return [record]
        if self.action == "drop":
            raise Dropped(f"contamination: contains evaluation prompt #{j} (containment {score:.2f})")
        return [dict(record, contamination={"prompt_index": j, "containment": round(score, 4)})]


# The paper's format and numerical constraint lists (its format/number recombination offers the
# model a few of each and lets it pick), reworded here; bracketed numbers are alternatives.
CONIFER_FORMAT_CONSTRAINTS: tuple[str, ...] = (
    "Start a blockquote paragraph with >> and a space.",
    "Strike text through by putting ~~ on both sides of it.",
    "Mark code with single backticks ` around inline code, or triple backticks ``` around a block.",
    "Hide spoiler text between || on both sides, so readers can choose to reveal it.",
    "Put %% around text that is a highlighted annotation.",
    "Make a drop cap at the start of a paragraph by writing << then the letter then >>.",
    "Center a paragraph by putting <<< on a line above it and >>> on a line below it.",
    "Mark an action by starting its sentence with an asterisk *.",
    "Separate parts with a thematic break: a line holding only ******.",
    "Write a title or heading as a line that starts and ends with === (three or more equals signs).",
    "Mark text in another font with <<>> before it and <<<font name>>> after it.",
    "Start every list item with > and a space.",
    "Emphasise a word or phrase by putting ** on both sides of it.",
    "Underline the important word or phrase by putting __ on both sides of it.",
    "Italicise the key word or phrase by putting // on both sides of it.",
    "Put actions or sound effects inside square brackets [ ].",
    "Put actions or sound effects inside parentheses ( ).",
    "Begin a sentence with ##.",
    "Put -- before and after the answer.",
    "Give a list header strong emphasis with double underscores __ __ around it.",
    "Make a list header bold with ** ** around it.",
)
CONIFER_NUMBER_CONSTRAINTS: tuple[str, ...] = (
    "Answer in [5, 10, 15] sentences, each beginning with ##Sen.",
    "Answer in [1, 3, 5] paragraphs.",
    "Answer in at most [100, 150, 200, 250, 300] words.",
    "Answer in at least [100, 150, 200, 300] words.",
    "Keep every word to at most [10, 20, 30] characters.",
    "Write exactly [2, 3, 4] sentences per paragraph, and at least [1, 2] paragraphs.",
    "Open with a rhetorical question, then give [2, 3, 4] sentences of explanation.",
    "Use only simple sentences of [5, 7, 10] words each.",
    "Write the answer as a dialogue of [4, 6, 8] exchanges between two characters.",
    "Give one introductory sentence, a list of [3, 4, 5] items, and one concluding sentence.",
    "Write [3, 5, 7] sentences whose first words start with consecutive letters of the alphabet (A, B, C, ...).",
    "Answer with a poem of [4, 6, 8] lines of [4, 6, 8] words each.",
)


_REWRITE_KEYS = ("rewritten instruction", "rewritten question", "rewritten_instruction", "rewritten_question")


@_schema("An instruction with constraints appended.")
class Rewritten(_Shaped):
    """An instruction with constraints appended: ``{"instruction": "..."}``.

    Also accepted: the key the authors' prompt names (``"rewritten instruction"``) or the one
    their code reads (``"rewritten question"``), with a space or an underscore; two such keys
    with different texts are refused.
    """

    instruction: str
    shape_note: SkipJsonSchema[str] = dataclasses.field(default="", repr=False, compare=False)

    @classmethod
    def _alternative(cls, data: Any) -> tuple[Any, str]:
        if not isinstance(data, dict) or "instruction" in data:
            return data, ""
        found = [k for k in data if str(k).strip().lower() in _REWRITE_KEYS]
        if not found:
            return data, ""
        texts = {json.dumps(data[k], ensure_ascii=False) for k in found}
        if len(texts) > 1:
            raise ValueError(f"the keys {found} hold different instructions")
        return {"instruction": data[found[0]]}, f"the key {found[0]!r}"


class FormatNumberRewriteStage(ModelStage):
    """Stage 5b of the paper: the model appends format/number constraints to each instruction.

    For every general instruction the model is offered ``int(offered * format_ratio)``
    constraints from the paper's format list and ``int(offered * (1 - format_ratio))`` from its
    numerical list (drawn deterministically from the record id and ``seed``) and writes the
    instruction again with one to three of them appended. The defaults are the authors'
    (``--sample-k 6 --ratio 0.6`` in their format/number script) and so is the rounding down
    of each share: 3 format and 2 numerical constraints, 5 in all, are offered, exactly as
    their script offers them (its help text calls 6 the total; its arithmetic gives 5). The
    variant keeps the offered list in ``fn_constraints``; these constraints have no automatic
    checker (``checks`` stays empty). Optional: when the answer is unusable the general
    instruction goes on alone.
    """

    name = "format_number"
    schema = Rewritten
    optional = True

    def __init__(
        self,
        seed: int = 0,
        offered: int = 6,
        format_ratio: float = 0.6,
        template: str | None = None,
        *,
        few_shot: bool = False,
    ) -> None:
        super().__init__(template, few_shot=few_shot)
        if offered < 1 or not 0 <= format_ratio <= 1:
            raise ConiferInputError(
                f"offered must be >= 1 and format_ratio in [0, 1], got {offered}, {format_ratio}"
            )
        self.seed = seed
        self.n_format = int(offered * format_ratio)
        self.n_number = int(offered * (1 - format_ratio))

    def select(self, record: Record) -> bool:
        """Only general instructions get variants."""
        return record.get("kind") == "general"

    def offered(self, record: Record) -> list[str]:
        """The constraints offered for ``record`` (deterministic)."""
        digest = hashlib.sha256(f"fn:{self.seed}:{record['id']}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        return rng.sample(CONIFER_FORMAT_CONSTRAINTS, self.n_format) + rng.sample(
            CONIFER_NUMBER_CONSTRAINTS, self.n_number
        )

    def prompt(self, record: Record) -> str:
        """Ask for the instruction with some of the offered constraints appended."""
        return (self.template or prompts.FORMAT_NUMBER_REWRITE).format(
            instruction=record["instruction"], constraints="\n".join(f"- {c}" for c in self.offered(record))
        )

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record itself and its format/number variant."""
        text = _clean(parsed.instruction)
        if not text or text.lower() == _clean(record["instruction"]).lower():
            raise Rejection("no constraint was appended")
        variant = _child(
            record,
            "fn",
            kind="format_number",
            instruction=text,
            checks=[],
            fn_constraints=self.offered(record),
        )
        return [record, variant]


class AnswerStage(ModelStage):
    """Stage 7: the strong model answers; verifiable constraints are checked.

    An empty answer, or one that fails a verifiable constraint of a format/number instruction,
    is set aside with the reason.
    """

    name = "answer"
    answer_length = "answer"

    def __init__(
        self,
        registry: CheckerRegistry | None = None,
        system: str | None = prompts.ANSWER_SYSTEM,
        *,
        process_in_answer: bool = False,
    ) -> None:
        super().__init__(None)
        self.registry = registry or default_registry()
        self.system = system
        self.process_in_answer = process_in_answer

    def _with_process(self, record: Record) -> bool:
        return self.process_in_answer and record.get("kind") == "format_number"

    def prompt(self, record: Record) -> str:
        """The instruction itself.

        For a format/number variant in ``process_in_answer`` mode: the instruction with the
        request to explain, after the answer, how each constraint was met.
        """
        if self._with_process(record):
            return prompts.ANSWER_WITH_PROCESS.format(instruction=record["instruction"])
        return str(record["instruction"])

    def conversation(self, record: Record) -> Conversation:
        """The instruction as the user turn (after an optional system turn)."""
        conv: Conversation = [{"role": "system", "content": self.system}] if self.system else []
        return [*conv, {"role": "user", "content": self.prompt(record)}]

    def _verify(self, record: Record, text: str) -> None:
        failed = [
            c["id"]
            for c in record.get("checks") or []
            if not self.registry.check(
                c["id"], text, c.get("kwargs"), mode="strict", prompt=record["instruction"]
            )
        ]
        if failed:
            raise Rejection(f"answer fails verifiable constraint(s) {failed}")

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record with ``answer``."""
        text = str(parsed).strip()
        if not text:
            raise Rejection("empty answer")
        self._verify(record, text)
        if self._with_process(record):
            return [dict(record, answer=text, process_in_answer=True)]
        return [dict(record, answer=text)]


class IFEvalAnswerStage(ModelStage):
    """Answer a benchmark prompt as it is (``record["prompt"]``), for :func:`generate_ifeval`."""

    name = "ifeval_answer"
    answer_length = "answer"
    keeps_cut_off_text = True

    def __init__(self, system: str | None = None) -> None:
        super().__init__(None)
        self.system = system

    def prompt(self, record: Record) -> str:
        """The benchmark prompt."""
        return str(record["prompt"])

    def conversation(self, record: Record) -> Conversation:
        """The prompt as the only user turn (after an optional system turn)."""
        conv: Conversation = [{"role": "system", "content": self.system}] if self.system else []
        return [*conv, {"role": "user", "content": self.prompt(record)}]

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record with ``response`` (an empty answer is kept: IFEval scores it as failing)."""
        return [dict(record, response=str(parsed))]


class InternalFeedbackStage(ModelStage):
    """Stage 8: internal process feedback on hard instructions (level >= ``hard_level``)."""

    name = "internal_feedback"
    schema = Steps
    optional = True

    example = (
        prompts.INTERNAL_FEEDBACK.format(
            instruction="In under 30 words and without commas, say what basil needs indoors.",
            answer="Basil needs six hours of sun and moist soil that drains well and a warm spot away from drafts.",
        ),
        '{"steps": ["under 30 words: the answer has 19 words", "no commas: none are used", '
        '"what basil needs: light, water, drainage and warmth are named"]}',
    )

    def __init__(self, hard_level: int = 4, template: str | None = None, *, few_shot: bool = False) -> None:
        super().__init__(template, few_shot=few_shot)
        self.hard_level = hard_level

    def select(self, record: Record) -> bool:
        """Hard, answered instructions only."""
        return int(record.get("level", 0)) >= self.hard_level and bool(record.get("answer"))

    def prompt(self, record: Record) -> str:
        """Ask how the answer meets each requirement."""
        return (self.template or prompts.INTERNAL_FEEDBACK).format(
            instruction=record["instruction"], answer=record["answer"]
        )

    def salvage(self, raw: str) -> Any | None:
        """The steps that arrived whole."""
        items = _salvaged_strings(raw, "steps")
        return Steps(items) if items else None

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record with ``process`` (a list of steps)."""
        steps = [_clean(s) for s in parsed.steps if _clean(s)]
        if not steps:
            raise Rejection("no process steps")
        return [dict(record, process=steps)]


class WeakAnswerStage(ModelStage):
    """Stage 9: the weak model answers the hardest level."""

    name = "weak_answer"
    role = "weak"
    optional = True
    answer_length = "answer"

    def __init__(self, top_level: int = 5, kinds: Sequence[str] | None = None) -> None:
        super().__init__(None)
        self.top_level = top_level
        self.kinds = tuple(kinds) if kinds is not None else None

    def select(self, record: Record) -> bool:
        """Top-level, answered instructions only (of ``kinds``, when given)."""
        if self.kinds is not None and record.get("kind") not in self.kinds:
            return False
        return int(record.get("level", 0)) >= self.top_level and bool(record.get("answer"))

    def prompt(self, record: Record) -> str:
        """The instruction alone."""
        return str(record["instruction"])

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record with ``weak_answer``."""
        text = str(parsed).strip()
        if not text:
            raise Rejection("empty weak answer")
        return [dict(record, weak_answer=text)]


class ExternalFeedbackStage(ModelStage):
    """Stage 10: the strong model judges the weak answer and explains its failures."""

    name = "external_feedback"
    schema = Judgement
    optional = True

    def select(self, record: Record) -> bool:
        """Records with a weak answer only."""
        return bool(record.get("weak_answer"))

    example = (
        prompts.EXTERNAL_FEEDBACK.format(
            instruction="In under 30 words and without commas, say what basil needs indoors.",
            reference="Basil needs six hours of sun and moist soil that drains well and a warm spot away from drafts.",
            candidate="Basil needs sun, water, and warmth, and you should also pinch the flowers off regularly.",
        ),
        '{"follows": false, "feedback": "It uses commas although the instruction forbids them; '
        'rewrite the list with and instead."}',
    )

    def prompt(self, record: Record) -> str:
        """Ask whether the weak answer follows every requirement."""
        return (self.template or prompts.EXTERNAL_FEEDBACK).format(
            instruction=record["instruction"], reference=record["answer"], candidate=record["weak_answer"]
        )

    def apply(self, record: Record, parsed: Any) -> list[Record]:
        """The record with ``follows`` and ``feedback``; a failure needs feedback text."""
        feedback = _clean(parsed.feedback)
        if not parsed.follows and not feedback:
            raise Rejection("judged as failing but gave no feedback")
        return [dict(record, follows=bool(parsed.follows), feedback=feedback)]


def default_stages(config: PipelineConfig, *, weak: bool = True, guard: Any = None) -> list[Stage]:
    """The stages of the paper in order, for ``config.mode``.

    ``"conifer"`` (the paper): the format/number variants are written by the model from the
    paper's constraint lists, their answers carry the internal process feedback (how each
    constraint was met) at the end, and the weak model answers the top level of the general
    instructions. ``"verifiable"``: format/number variants get IFEval-checkable constraints from
    :data:`FORMAT_NUMBER_TEMPLATES` (answers are verified by the checkers), and internal
    feedback is a separate call on the hard levels.
    """
    fs = config.few_shot
    conifer = config.mode == "conifer"
    stages: list[Stage] = [
        SeedStage(config),
        ReframeStage(config.num_reframes, few_shot=fs),
    ]
    if config.filters:
        stages.append(FilterStage("query", few_shot=fs))
    stages += [
        ConstraintStage(config.min_categories, config.max_categories, few_shot=fs),
        RecombineStage(config.num_levels, few_shot=fs, min_levels=config.min_levels or None),
    ]
    if config.format_number_enabled:
        if conifer:
            stages.append(FormatNumberRewriteStage(config.seed, few_shot=fs))
        else:
            stages.append(FormatNumberStage(config.format_constraints, config.seed))
    if guard is None and config.contamination_prompts:
        from zjulab.conifer.contamination import ContaminationGuard
        from zjulab.conifer.ifeval import load_prompt_texts

        guard = ContaminationGuard(
            load_prompt_texts(config.contamination_prompts),
            n=config.contamination_n,
            threshold=config.contamination_threshold,
        )
    if guard is not None:
        stages.append(ContaminationStage(guard, config.contamination_action))
    if config.filters:
        stages.append(FilterStage("instruction", few_shot=fs))
    if conifer:
        stages.append(AnswerStage(process_in_answer=True))
    else:
        stages += [AnswerStage(), InternalFeedbackStage(config.effective_hard_level, few_shot=fs)]
    if weak:
        stages += [
            WeakAnswerStage(config.weak_level or config.num_levels, kinds=("general",) if conifer else None),
            ExternalFeedbackStage(few_shot=fs),
        ]
    return stages
