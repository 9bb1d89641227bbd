"""Turn dialogues into the samples of the five tasks.

* :class:`UnderstandingExample` -- one utterance with its attribute spans (task 1).
* :class:`ElicitationExample` -- the dialogue before an assistant question and the attributes
  that question asks about (task 2).
* :class:`RecommendationExample` -- the needs elicited before a recommendation, the user's
  behaviour history, the candidate items and the recommended one(s) (task 3).
* :class:`GenerationExample` -- context, needs and the recommended item before an assistant
  question or explanation, and that utterance as the target (task 4).
* :class:`EvaluationExample` -- a context, an assistant response and its human quality score
  (task 5).

:func:`build_task_samples` makes all five lists for one split of a
:class:`~zjulab.crs.loaders.UNeedCorpus`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from zjulab.crs.dialogue import Dialogue, Item, Utterance, canonical_time, latest_time
from zjulab.crs.loaders import UNeedCorpus

__all__ = [
    "TASKS",
    "ElicitationExample",
    "EvaluationExample",
    "GenerationExample",
    "RecommendationExample",
    "TaskSamples",
    "UnderstandingExample",
    "build_elicitation",
    "build_evaluation",
    "build_generation",
    "build_recommendation",
    "build_task_samples",
    "build_understanding",
    "near_duplicate_key",
    "render_context",
    "split_overlap",
    "task_examples",
    "turn_time",
]

Task = Literal["understanding", "elicitation", "recommendation", "generation", "evaluation"]
TASKS: tuple[Task, ...] = ("understanding", "elicitation", "recommendation", "generation", "evaluation")
"""The five U-NEED tasks in the paper's order."""

LINK_ONLY = {"仅发送商品链接", "here is a link"}
"""Recommendation texts that only carry a link (not generation targets)."""

Turn = tuple[str, str]


def near_duplicate_key(text: str) -> str:
    """The form two texts share when they are near duplicates.

    Lower-cased, with everything but letters, digits and CJK characters removed (punctuation,
    spaces, symbols).
    """
    return "".join(ch for ch in text.lower() if ch.isalnum())


def split_overlap(corpus: UNeedCorpus, train: str = "train", test: str = "test") -> dict[str, int]:
    """How much of ``test`` is already in ``train`` (utterances, references, needs-target pairs).

    Counted: task-1 utterances, task-4 references and task-3 (needs, target) pairs.

    Returns:
        ``{"understanding_total", "understanding_exact", "understanding_near", "generation_total",
        "generation_exact", "generation_near", "recommendation_total", "recommendation_exact"}``:
        the number of test texts, of those that appear verbatim among the train texts, and of
        those whose :func:`near_duplicate_key` does; the number of test recommendation examples
        and of those whose category, set of needs and target are those of a train example (one
        a lookup table answers).
    """
    out: dict[str, int] = {}

    def rec_keys(ds: Sequence[Dialogue]) -> list[tuple[str, frozenset[tuple[str, str]], str]]:
        return [(e.category, frozenset(e.needs), e.targets[0]) for e in build_recommendation(ds)]

    seen = set(rec_keys(corpus.split(train)))
    held = rec_keys(corpus.split(test))
    out["recommendation_total"] = len(held)
    out["recommendation_exact"] = sum(k in seen for k in held)
    for task, texts in (
        ("understanding", lambda ds: [e.text for e in build_understanding(ds)]),
        ("generation", lambda ds: [e.response for e in build_generation(ds, corpus)]),
    ):
        tr = texts(corpus.split(train))
        te = texts(corpus.split(test))
        exact = set(tr)
        near = {near_duplicate_key(t) for t in tr}
        out[f"{task}_total"] = len(te)
        out[f"{task}_exact"] = sum(t in exact for t in te)
        out[f"{task}_near"] = sum(near_duplicate_key(t) in near for t in te)
    return out


def render_context(context: Sequence[Turn], max_turns: int | None = None) -> str:
    """Render ``(role, text)`` turns as ``role: text`` lines (the last ``max_turns`` only)."""
    turns = list(context)[-max_turns:] if max_turns else list(context)
    return "\n".join(f"{role}: {text}" for role, text in turns)


@dataclass
class UnderstandingExample:
    """Task 1: tag the attribute values in one utterance.

    Args:
        text: The utterance.
        spans: Gold ``(key, start, end)`` spans.
        pairs: Gold ``(key, value)`` pairs, including value-less mentions.
        role: Speaker.
        context: Earlier ``(role, text)`` turns.
        category: Canonical category.
        sid: Dialogue id.
        seq_no: Utterance number.
    """

    text: str
    spans: list[tuple[str, int, int]]
    pairs: list[tuple[str, str]]
    role: str = "user"
    context: list[Turn] = field(default_factory=list)
    category: str = ""
    sid: str = ""
    seq_no: int = 0


@dataclass
class ElicitationExample:
    """Task 2: which attributes should the assistant ask about next.

    Args:
        context: ``(role, text)`` turns before the question.
        known: ``(key, value)`` pairs the user gave so far.
        targets: Attribute keys the assistant asked about.
        category: Canonical category.
        sid: Dialogue id.
    """

    context: list[Turn]
    known: list[tuple[str, str]]
    targets: list[str]
    category: str = ""
    sid: str = ""


@dataclass
class RecommendationExample:
    """Task 3: rank candidate items from the needs, knowledge and behaviours.

    Args:
        needs: ``(key, value)`` pairs the user gave before the recommendation.
        history: Item ids of the user's behaviours (oldest first).
        candidates: Candidate item ids.
        targets: Recommended (relevant) item ids.
        context: ``(role, text)`` turns before the recommendation.
        category: Canonical category.
        sid: Dialogue id.
        user_id: User id.
        time: When the recommendation was made (``YYYY-MM-DD HH:MM:SS``): features may only use
            behaviours strictly before it. ``""`` means unknown, and then no behaviour is used.
    """

    needs: list[tuple[str, str]]
    history: list[str]
    candidates: list[str]
    targets: list[str]
    context: list[Turn] = field(default_factory=list)
    category: str = ""
    sid: str = ""
    user_id: str = ""
    time: str = ""


@dataclass
class GenerationExample:
    """Task 4: generate the assistant's next utterance.

    Args:
        context: ``(role, text)`` turns before the response.
        needs: ``(key, value)`` pairs given so far.
        ask: Attribute keys the response asks about (empty for explanations).
        item: The most recently recommended item, if any.
        response: The gold response.
        act: The response's act (``system_ask`` or ``system_explain``).
        category: Canonical category.
        sid: Dialogue id.
        ask_values: Every ``(key, value)`` the response offers for the attributes it asks about
            (``肤质`` asked as 偏油 or 偏干 gives both pairs); empty for value-less questions.
            These are spans of the gold response, kept for analysis: they are not an input of
            any generator (:func:`~zjulab.crs.generation.generation_prompt` names the asked keys
            only).
    """

    context: list[Turn]
    needs: list[tuple[str, str]]
    ask: list[str]
    item: Item | None
    response: str
    act: str = "system_ask"
    category: str = ""
    sid: str = ""
    ask_values: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class EvaluationExample:
    """Task 5: a response and its human quality score.

    Args:
        context: ``(role, text)`` turns before the response.
        response: The assistant's response.
        score: Human quality score.
        category: Canonical category.
        sid: Dialogue id.
        reference: A gold response for the same context, when one exists (RUBER's referenced
            score); ``""`` otherwise.
    """

    context: list[Turn]
    response: str
    score: float
    category: str = ""
    sid: str = ""
    reference: str = ""


def _turn(u: Utterance) -> Turn:
    return (u.role, u.text)


def build_understanding(dialogues: Sequence[Dialogue]) -> list[UnderstandingExample]:
    """One example per utterance, link-only recommendation turns excluded."""
    out = []
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            if u.act == "system_recommend" and u.text in LINK_ONLY:
                continue
            out.append(
                UnderstandingExample(
                    text=u.text,
                    spans=[(a.key, a.start, a.end) for a in u.attributes if a.has_span],
                    pairs=u.pairs(),
                    role=u.role,
                    context=[_turn(x) for x in d.utterances[:i]],
                    category=d.category,
                    sid=d.sid,
                    seq_no=u.seq_no,
                )
            )
    return out


def _known(utts: Sequence[Utterance]) -> list[tuple[str, str]]:
    """Every distinct ``(key, value)`` the user gave, in order of first mention.

    A multi-valued need keeps all its values: ``品类`` given as 洗面奶, 水乳 and 套装 yields three
    pairs, not the last one.
    """
    seen: dict[tuple[str, str], None] = {}
    for u in utts:
        if u.is_user:
            for a in u.attributes:
                if a.value:
                    seen.setdefault((a.key, a.value), None)
    return list(seen)


def turn_time(dialogue: Dialogue, index: int) -> str:
    """The time of utterance ``index`` of ``dialogue``, in :func:`canonical_time` form.

    Its own stamp, else the latest stamp before it, else the dialogue's date (``ds`` as
    ``YYYY-MM-DD 00:00:00``), else ``""``.

    Raises:
        DataFormatError: A stamp that is not a date-time (named by dialogue and ``seq_no``).
    """
    for u in reversed(dialogue.utterances[: index + 1]):
        if u.time.strip():
            return canonical_time(u.time, f"dialogue {dialogue.sid} (seq_no {u.seq_no}): time")
    ds = dialogue.ds
    if len(ds) == 8 and ds.isdigit():
        return f"{ds[:4]}-{ds[4:6]}-{ds[6:]} 00:00:00"
    return ""


def build_elicitation(dialogues: Sequence[Dialogue]) -> list[ElicitationExample]:
    """One example per assistant question (``system_ask``) that names at least one attribute."""
    out = []
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            if u.act != "system_ask":
                continue
            keys = list(dict.fromkeys(a.key for a in u.attributes))
            if not keys:
                continue
            prev = d.utterances[:i]
            out.append(ElicitationExample([_turn(x) for x in prev], _known(prev), keys, d.category, d.sid))
    return out


def build_recommendation(
    dialogues: Sequence[Dialogue],
    corpus: UNeedCorpus | None = None,
    *,
    candidates: Literal["file", "category"] = "file",
) -> list[RecommendationExample]:
    """One example per recommended item of each recommendation turn.

    A turn recommending two items gives two examples, each with one target and its own
    candidate list (``rec_item_candidates`` holds one list per item of ``rec_item_id``), as in
    the authors' recommendation samples; the turn's other recommended items are left out of
    that example's candidates (neither a hit nor a negative).

    Candidate-set rules (``candidates``):

    * ``"file"`` (default): the item's list in ``rec_item_candidates`` (20 items in the LLM-CRS
      release: the item and 19 others of its shop or category); when the file has none, the
      ``"category"`` rule.
    * ``"category"``: every known item of the recommended item's category (by the
      ``category``/``一级类目`` knowledge tuple; the category id after ``@`` in
      ``rec_item_info``), the rule to use for Hit/NDCG/MRR at 50, which a 20-item list makes
      trivial.

    The recommended item is always a candidate. The history holds the user's behaviours from ``corpus`` that happened strictly
    before the recommendation turn (oldest first; ties in time by item id), never later ones;
    when the turn's time is unknown (no stamp on it or before it, no ``ds``) the history is empty.
    """
    if candidates not in ("file", "category"):
        from zjulab.crs.errors import CrsConfigError

        raise CrsConfigError(f"candidates must be 'file' or 'category', got {candidates!r}")
    history: dict[str, list[tuple[str, str]]] = defaultdict(list)
    by_cat: dict[str, list[str]] = defaultdict(list)
    if corpus is not None:
        # (order key, latest moment, behaviour), each stamp parsed once: a date alone counts as
        # its day's last moment, so it is never before a turn of that day
        stamped = []
        for b in corpus.behaviours:
            where = f"behaviour of user {b.user_id} on item {b.item_id}"
            stamped.append((canonical_time(b.time, where), latest_time(b.time, where), b))
        for _, latest, b in sorted(stamped, key=lambda x: (x[0], x[2].item_id)):
            history[b.user_id].append((latest, b.item_id))
        for item in corpus.items.values():
            cat = (item.values("category") or item.values("一级类目") or [""])[0]
            by_cat[cat].append(item.item_id)
    out = []
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            if u.act != "system_recommend" or not u.rec_item_ids:
                continue
            prev = d.utterances[:i]
            when = turn_time(d, i)
            past = [iid for t, iid in history.get(d.user_id, []) if when and t and t < when]
            info = dict(x.split("@", 1) for x in u.rec_item_info if "@" in x)
            lists = u.rec_candidates or []
            for j, target in enumerate(u.rec_item_ids):
                if target in u.rec_item_ids[:j]:
                    continue  # an item listed twice is one example
                # one example per recommended item, ranked within its own candidate list (the
                # authors' samples); the turn's other recommended items are no candidates of it
                others = set(u.rec_item_ids) - {target}
                cands = list(lists[j]) if candidates == "file" and j < len(lists) else []
                if not cands:
                    item = corpus.items.get(target) if corpus is not None else None
                    cats = {info.get(target, ""), d.category}
                    if item is not None:
                        cats |= set(item.values("category") + item.values("一级类目"))
                    cands = [x for c in sorted(cats - {""}) for x in by_cat.get(c, [])]
                cands = [x for x in dict.fromkeys([*cands, target]) if x not in others]
                out.append(
                    RecommendationExample(
                        needs=_known(prev),
                        history=past,
                        candidates=cands,
                        targets=[target],
                        context=[_turn(x) for x in prev],
                        category=d.category,
                        sid=d.sid,
                        user_id=d.user_id,
                        time=when,
                    )
                )
    return out


def build_generation(
    dialogues: Sequence[Dialogue], corpus: UNeedCorpus | None = None
) -> list[GenerationExample]:
    """One example per assistant question or explanation (link-only turns skipped)."""
    items = corpus.items if corpus is not None else {}
    out = []
    for d in dialogues:
        last_item: Item | None = None
        for i, u in enumerate(d.utterances):
            if u.rec_item_ids:
                iid = u.rec_item_ids[0]
                last_item = items.get(iid, Item(item_id=iid))
            if u.is_user or u.act not in ("system_ask", "system_explain") or u.text in LINK_ONLY:
                continue
            if d.quality.get(u.seq_no, 5.0) < 3.5:
                continue  # a response rated poor is not a generation target
            prev = d.utterances[:i]
            asking = u.act == "system_ask"
            ask = list(dict.fromkeys(a.key for a in u.attributes)) if asking else []
            values = list(dict.fromkeys((a.key, a.value) for a in u.attributes if a.value)) if asking else []
            out.append(
                GenerationExample(
                    [_turn(x) for x in prev],
                    _known(prev),
                    ask,
                    last_item,
                    u.text,
                    u.act,
                    d.category,
                    d.sid,
                    ask_values=values,
                )
            )
    return out


def build_evaluation(dialogues: Sequence[Dialogue]) -> list[EvaluationExample]:
    """One example per assistant utterance that has a quality score."""
    out = []
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            if u.seq_no in d.quality:
                out.append(
                    EvaluationExample(
                        [_turn(x) for x in d.utterances[:i]],
                        u.text,
                        d.quality[u.seq_no],
                        d.category,
                        d.sid,
                        d.references.get(u.seq_no, ""),
                    )
                )
    return out


@dataclass
class TaskSamples:
    """The five tasks' samples of one split."""

    understanding: list[UnderstandingExample]
    elicitation: list[ElicitationExample]
    recommendation: list[RecommendationExample]
    generation: list[GenerationExample]
    evaluation: list[EvaluationExample]


def task_examples(
    corpus: UNeedCorpus, split: str, task: str, *, candidates: Literal["file", "category"] = "file"
) -> list[Any]:
    """One task's examples of one split, refusing an empty result with a reason.

    ``candidates`` is the recommendation candidate-set rule (see :func:`build_recommendation`).

    Raises:
        MissingScoresError: ``task == "evaluation"`` and no utterance of the split has a human
            quality score; the message names the side file that would hold them.
        UnknownLabelError: Unknown task.
        DataFormatError: The split is absent or yields no example of the task.
    """
    from zjulab.crs.errors import DataFormatError, MissingScoresError, UnknownLabelError
    from zjulab.crs.loaders import QUALITY_FILE

    if task not in TASKS:
        raise UnknownLabelError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    ds = corpus.split(split)
    if not ds:
        raise DataFormatError(f"{corpus.root or corpus.name}: no {split!r} split ({split}_dialogue.json)")
    out: list[Any] = getattr(build_task_samples(corpus, split, candidates=candidates), task)
    if not out and task == "evaluation":
        where = corpus.root / QUALITY_FILE if corpus.root is not None else QUALITY_FILE
        raise MissingScoresError(
            f"task 5 needs human quality scores, and no utterance of the {split!r} split has one: "
            f"add {where} (CSV sid,seq_no,score, one row per rated assistant utterance)"
        )
    if not out:
        raise DataFormatError(f"{corpus.root or corpus.name}: the {split!r} split yields no {task} example")
    return out


def build_task_samples(
    corpus: UNeedCorpus, split: str, *, candidates: Literal["file", "category"] = "file"
) -> TaskSamples:
    """All five tasks' samples of one split of ``corpus``.

    ``candidates`` is the recommendation candidate-set rule, see :func:`build_recommendation`.
    """
    ds = corpus.split(split)
    return TaskSamples(
        understanding=build_understanding(ds),
        elicitation=build_elicitation(ds),
        recommendation=build_recommendation(ds, corpus, candidates=candidates),
        generation=build_generation(ds, corpus),
        evaluation=build_evaluation(ds),
    )
