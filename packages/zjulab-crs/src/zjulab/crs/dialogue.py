"""The common data model: pre-sales dialogues, item knowledge and user behaviours.

U-NEED stores Chinese labels (``用户``/``客服`` for the speaker, ``用户需求``... for the act,
``美妆行业``... for the category). The model keeps canonical English names (``user``,
``system_ask``, ``beauty``) and :mod:`zjulab.crs.loaders` maps between the two, so a dialogue
read from U-NEED and written back is byte-for-byte the same JSON value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from zjulab.crs.errors import DataFormatError

__all__ = [
    "ACT_LABELS",
    "CATEGORY_NAMES",
    "ROLE_LABELS",
    "Attribute",
    "Behaviour",
    "Dialogue",
    "Item",
    "TaskSample",
    "Utterance",
    "canonical_time",
    "category_of",
    "format_pairs",
    "parse_pairs",
]

Role = Literal["user", "assistant"]

ROLE_LABELS: dict[str, Role] = {"用户": "user", "客服": "assistant"}
"""U-NEED ``sender_type`` label -> canonical role."""

ACT_LABELS: dict[str, str] = {
    "用户需求": "user_need",
    "用户回答": "user_answer",
    "用户反馈": "user_feedback",
    "系统提问": "system_ask",
    "系统推荐": "system_recommend",
    "系统解释": "system_explain",
}
"""U-NEED ``act_tag`` label -> canonical act name (three user acts, three assistant acts)."""

CATEGORY_NAMES: dict[str, str] = {
    "美妆行业": "beauty",
    "服装行业": "fashion",
    "手机行业": "phones",
    "鞋类行业": "shoes",
    "大家电行业": "appliances",
}
"""U-NEED ``domain`` label -> the category name used in reports (the paper's five categories)."""


def category_of(domain: str) -> str:
    """Canonical category name of a U-NEED ``domain`` label (unknown labels pass through)."""
    return CATEGORY_NAMES.get(domain, domain)


@dataclass
class Attribute:
    """One annotated attribute mention in an utterance.

    Args:
        key: Attribute name, e.g. ``品类`` (category) or ``skin type``.
        value: Attribute value as written in the utterance; empty when the speaker names the
            attribute without a value (an assistant asking "which skin type?").
        start: Character offset of the value in the utterance, ``-1`` when there is no span.
        end: Exclusive end offset, ``-1`` when there is no span.
    """

    key: str
    value: str
    start: int = -1
    end: int = -1

    @property
    def has_span(self) -> bool:
        """Whether the value is located in the text (``start >= 0``)."""
        return self.start >= 0


@dataclass
class Utterance:
    """One turn of a pre-sales dialogue.

    Args:
        seq_no: 1-based position in the dialogue.
        role: ``"user"`` or ``"assistant"`` (customer service).
        text: What was said (``send_content``).
        act: Canonical act, see :data:`ACT_LABELS`.
        attributes: Annotated attribute mentions.
        rec_item_ids: Items recommended in this turn.
        rec_item_info: ``"item_id@category_id"`` strings as in U-NEED.
        rec_candidates: Candidate lists the recommendation was drawn from (one list per
            recommended item), or ``None`` when the file has no such field.
        time: Time stamp as written in the file.
    """

    seq_no: int
    role: Role
    text: str
    act: str
    attributes: list[Attribute] = field(default_factory=list)
    rec_item_ids: list[str] = field(default_factory=list)
    rec_item_info: list[str] = field(default_factory=list)
    rec_candidates: list[list[str]] | None = None
    time: str = ""

    @property
    def is_user(self) -> bool:
        """Whether the user said this."""
        return self.role == "user"

    def pairs(self) -> list[tuple[str, str]]:
        """The ``(key, value)`` pairs of the utterance's attributes, in order."""
        return [(a.key, a.value) for a in self.attributes]


@dataclass
class Dialogue:
    """A pre-sales dialogue between a user and customer service.

    Args:
        sid: Session id.
        domain: Category label as stored (``美妆行业`` or an English name such as ``beauty``).
        utterances: Turns in order.
        seller_id: Shop id.
        user_id: User id (joins with :class:`Behaviour`).
        ds: Date stamp ``YYYYMMDD``.
        quality: Optional human quality scores of assistant turns, keyed by ``seq_no``
            (used by task 5; not part of the public U-NEED release).
        references: Optional gold responses of assistant turns, keyed by ``seq_no`` (RUBER's
            referenced score in task 5).
    """

    sid: str
    domain: str
    utterances: list[Utterance]
    seller_id: str = ""
    user_id: str = ""
    ds: str = ""
    quality: dict[int, float] = field(default_factory=dict)
    references: dict[int, str] = field(default_factory=dict)

    @property
    def category(self) -> str:
        """Canonical category name (see :data:`CATEGORY_NAMES`)."""
        return category_of(self.domain)

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)


@dataclass
class Item:
    """An item and its knowledge tuples ``(relation, value)``.

    Args:
        item_id: Item id.
        knowledge: ``(relation_name, value)`` tuples in file order.
        seller_id: Shop id.
    """

    item_id: str
    knowledge: list[tuple[str, str]] = field(default_factory=list)
    seller_id: str = ""

    def values(self, relation: str) -> list[str]:
        """All values of one relation."""
        return [v for r, v in self.knowledge if r == relation]

    def text(self) -> str:
        """The knowledge tuples as one line, ``relation: value; ...`` (what rankers read)."""
        return "; ".join(f"{r}: {v}" for r, v in self.knowledge)


@dataclass
class Behaviour:
    """One user behaviour record (a click, cart or purchase event).

    Args:
        seller_id: Shop id.
        user_id: User id.
        item_id: Item acted on.
        time: Time stamp as written (``YYYY-MM-DD HH:MM:SS``).
        action: Action type id as stored in U-NEED (``0`` in the public samples).
    """

    seller_id: str
    user_id: str
    item_id: str
    time: str
    action: int = 0


@dataclass
class TaskSample:
    """One prepared task sample in U-NEED's ``saved_data`` / ``prompt4LLM`` format.

    Args:
        input: Context lines (``"用户：..."``, ``"需求：..."``, ``"客服：..."``).
        domain: Category label.
        sid: Dialogue session id.
        task_name: Task, e.g. ``Understand``.
        label: Target in ``key：value；key：value`` form (see :func:`parse_pairs`).
        user_id: User id.
        seller_id: Shop id.
        sample_index_in_dialogue: Position of the sample within its dialogue.
        sample_id: Running sample id.
        extra: Any further fields of the record (LLM prompts and predictions), kept in order.
    """

    input: list[str]
    domain: str
    sid: str
    task_name: str
    label: str
    user_id: str = ""
    seller_id: str = ""
    sample_index_in_dialogue: int = 0
    sample_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        """Canonical category name."""
        return category_of(self.domain)

    def label_pairs(self) -> list[tuple[str, str]]:
        """The label parsed into ``(key, value)`` pairs."""
        return parse_pairs(self.label)


def canonical_time(value: str, where: str = "time") -> str:
    """A time stamp in the one form whose string order is its time order.

    Files write times as ``YYYY-MM-DD HH:MM:SS``, but a stamp with a ``T`` separator, a date
    alone, fractional seconds or surrounding white space compares wrongly as text (``"2022-10-15
    23:00:00" < "2022-10-15T22:00:00"``), so every comparison of times goes through this form:
    ``YYYY-MM-DD HH:MM:SS`` (``.ffffff`` appended when there are microseconds). ``""`` stays
    ``""`` (unknown).

    Raises:
        DataFormatError: ``value`` is not an ISO 8601 date or date-time, or carries a time-zone
            offset (U-NEED's stamps are local times without one); the message starts with
            ``where``.
    """
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: time must be a string, got {value!r}")
    text = value.strip()
    if not text:
        return ""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise DataFormatError(f"{where} {value!r} is not a date-time (YYYY-MM-DD HH:MM:SS)") from None
    if when.tzinfo is not None:
        raise DataFormatError(f"{where} {value!r} has a time-zone offset; write local times without one")
    return when.isoformat(sep=" ")


def latest_time(stamp: str, where: str = "time") -> str:
    """The latest moment ``stamp`` may stand for, in :func:`canonical_time` form.

    A stamp holding a date alone is known to the day only: it stands for the last microsecond
    of that day, so an event dated to the day of a recommendation never counts as before it.
    Other stamps are their :func:`canonical_time`; ``""`` stays ``""``.

    Raises:
        DataFormatError: ``stamp`` is not a date or date-time (the message starts with ``where``).
    """
    t = canonical_time(stamp, where)
    if not t:
        return ""
    try:
        date.fromisoformat(stamp.strip())
    except ValueError:
        return t  # a date and a time
    return f"{t[:10]} 23:59:59.999999"


def happened_before(stamp: str, when: str, where: str = "time") -> bool:
    """Whether an event stamped ``stamp`` certainly happened strictly before ``when``.

    ``when`` is in :func:`canonical_time` form; an unknown stamp or ``when`` (``""``) is never
    before anything, and a date alone counts as its day's last moment (:func:`latest_time`).
    """
    t = latest_time(stamp, where)
    return bool(t and when and t < when)


_PAIR_SEP = re.compile(r"[；;]")
_KV_SEP = re.compile(r"[：:]")


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Parse U-NEED's label string into ``(key, value)`` pairs.

    Pairs are separated by ``；`` (or ``;``), key and value by the first ``：`` (or ``:``). A
    pair without a separator is a key with an empty value; blank pieces are skipped.

    Example:
        ``parse_pairs("品类：洗面奶；年龄：")`` gives ``[("品类", "洗面奶"), ("年龄", "")]``.
    """
    out: list[tuple[str, str]] = []
    for piece in _PAIR_SEP.split(text or ""):
        piece = piece.strip()
        if not piece:
            continue
        parts = _KV_SEP.split(piece, maxsplit=1)
        key = parts[0].strip()
        value = parts[1].strip() if len(parts) > 1 else ""
        if key:
            out.append((key, value))
    return out


def format_pairs(pairs: Iterable[tuple[str, str]] | Sequence[Attribute]) -> str:
    """Inverse of :func:`parse_pairs`, with U-NEED's full-width separators."""
    items = [(p.key, p.value) if isinstance(p, Attribute) else (p[0], p[1]) for p in pairs]
    return "；".join(f"{k}：{v}" for k, v in items)
