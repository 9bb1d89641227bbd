"""LoCoMo evaluation: evidence recall@k and the official answer F1, FluxMem against flat RAG.

The data set is read by path (``locomo10.json`` of snap-research/LoCoMo, CC BY-NC 4.0); it is not
shipped. Each conversation is ingested session by session into its own scope, every question is
searched, and:

* **evidence recall@k**: the share of a question's evidence turns (``dia_id``) found among the
  first ``k`` distinct episodic turns retrieved (a semantic result counts through the turns it
  is grounded in). It needs no chat model.
* **F1** (optional, slow with a small model): the chat model answers from the retrieved turns
  and the answer is scored with the official rules: lower-case, strip punctuation and the words
  *a, an, the, and*, Porter-stem, token F1; category 1 (multi-hop) splits prediction and answer
  at commas and averages the best match per answer part; category 3 keeps the answer up to the
  first ``;``; category 5 (adversarial) scores 1 when the prediction says *no information
  available* or *not mentioned*.

The baseline is flat embedding RAG: the same encoder, cosine top-k over the raw turns.
"""

from __future__ import annotations

import logging
import re
import string
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.errors import StoreError
from zjulab.common.io import read_json
from zjulab.common.progress import progress
from zjulab.common.protocols import ChatModel, TextEncoder
from zjulab.fluxmem.config import FluxMemConfig
from zjulab.fluxmem.errors import DatasetError, MemoryInputError
from zjulab.fluxmem.memory import FluxMemory
from zjulab.fluxmem.reasoner import MemoryReasoner
from zjulab.fluxmem.validation import check_text_tree

__all__ = [
    "CATEGORY_NAMES",
    "FlatRAG",
    "LocomoQA",
    "LocomoReport",
    "LocomoSample",
    "LocomoTurn",
    "answer_f1",
    "evaluate_locomo",
    "evidence_recall",
    "load_locomo",
    "locomo_score",
    "normalize_answer",
]

logger = logging.getLogger(__name__)

CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


@dataclass
class LocomoTurn:
    """One dialogue turn."""

    dia_id: str
    speaker: str
    text: str
    session: int
    date_time: str

    @property
    def content(self) -> str:
        """``"speaker: text"``, the string both systems index."""
        return f"{self.speaker}: {self.text}"


@dataclass
class LocomoQA:
    """One question with its gold answer, category and (cleaned) evidence turn ids."""

    question: str
    answer: str
    category: int
    evidence: list[str]


@dataclass
class LocomoSample:
    """One LoCoMo conversation."""

    sample_id: str
    turns: list[LocomoTurn]
    qa: list[LocomoQA]

    def sessions(self) -> list[list[LocomoTurn]]:
        """Turns grouped by session, in order."""
        out: dict[int, list[LocomoTurn]] = {}
        for t in self.turns:
            out.setdefault(t.session, []).append(t)
        return [out[k] for k in sorted(out)]


_SESSION = re.compile(r"^session_(\d+)$")
_EVID = re.compile(r"D:?(\d+):0*(\d+)")


def _clean_evidence(raw: Sequence[str], known: set[str]) -> list[str]:
    out: list[str] = []
    for item in raw:
        for m in _EVID.finditer(str(item)):
            dia = f"D{m.group(1)}:{m.group(2)}"
            if dia in known and dia not in out:
                out.append(dia)
    return out


def load_locomo(path: str | Path) -> list[LocomoSample]:
    """Read ``locomo10.json`` (or a file of the same shape).

    Image turns keep their caption as ``"[shares <caption>]"`` after the text. Evidence ids are
    cleaned (``"D:11:26"`` → ``"D11:26"``, ``"D30:05"`` → ``"D30:5"``, several ids in one
    string split) and ids naming no turn are dropped.

    Raises:
        DatasetError: The file is missing, not JSON, or not LoCoMo-shaped (the message names
            the file and the sample).
    """
    p = Path(path)
    try:
        data = read_json(p)
    except StoreError as exc:
        raise DatasetError(f"cannot read LoCoMo file: {exc}") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{p}: expected a list of conversations, got {type(data).__name__}")
    samples = []
    for i, raw in enumerate(data):
        try:
            check_text_tree(raw, f"{p}: conversation {i}")
        except MemoryInputError as exc:
            raise DatasetError(str(exc)) from None
        try:
            conv = raw["conversation"]
            turns: list[LocomoTurn] = []
            for key, value in conv.items():
                m = _SESSION.match(key)
                if not m or not isinstance(value, list):
                    continue
                s = int(m.group(1))
                date = str(conv.get(f"session_{s}_date_time", ""))
                for t in value:
                    text = str(t["text"])
                    if t.get("blip_caption"):
                        text = f"{text} [shares {t['blip_caption']}]"
                    turns.append(LocomoTurn(str(t["dia_id"]), str(t["speaker"]), text, s, date))
            turns.sort(
                key=lambda t: (
                    t.session,
                    int(t.dia_id.split(":")[1]) if t.dia_id.split(":")[-1].isdigit() else 0,
                )
            )
            known = {t.dia_id for t in turns}
            qa = []
            for q in raw["qa"]:
                answer = q.get("answer", q.get("adversarial_answer", ""))
                qa.append(
                    LocomoQA(
                        str(q["question"]),
                        str(answer),
                        int(q["category"]),
                        _clean_evidence(q.get("evidence", []), known),
                    )
                )
            samples.append(LocomoSample(str(raw.get("sample_id", f"conv-{i}")), turns, qa))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{p}: conversation {i} is not LoCoMo-shaped ({exc!r})") from exc
    return samples


# ---------------------------------------------------------------------- official F1


def normalize_answer(s: str) -> str:
    """LoCoMo's answer normalisation.

    Drops commas, lower-cases, strips punctuation and the words a/an/the/and, and collapses
    whitespace.
    """
    s = s.replace(",", "").lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the|and)\b", " ", s)
    return " ".join(s.split())


_STEMMER: Any = None


def _stem(word: str) -> str:
    global _STEMMER
    if _STEMMER is None:
        from nltk.stem import PorterStemmer

        _STEMMER = PorterStemmer()
    return str(_STEMMER.stem(word))


def answer_f1(prediction: str, truth: str) -> float:
    """Token F1 between normalised, Porter-stemmed prediction and gold answer."""
    pred = [_stem(w) for w in normalize_answer(prediction).split()]
    gold = [_stem(w) for w in normalize_answer(truth).split()]
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def locomo_score(prediction: str, answer: str, category: int) -> float:
    """The official per-category score (see the module docstring)."""
    if category == 5:
        low = prediction.lower()
        return 1.0 if ("no information available" in low or "not mentioned" in low) else 0.0
    if category == 3:
        answer = answer.split(";")[0].strip()
    if category == 1:
        preds = [p.strip() for p in prediction.split(",")]
        golds = [g.strip() for g in answer.split(",")]
        return float(np.mean([max(answer_f1(p, g) for p in preds) for g in golds]))
    return answer_f1(prediction, answer)


def evidence_recall(retrieved: Sequence[str], evidence: Sequence[str], k: int) -> float:
    """Share of ``evidence`` ids among the first ``k`` of ``retrieved``."""
    if not evidence:
        raise ValueError("evidence_recall needs at least one evidence id")
    top = set(retrieved[:k])
    return sum(1 for e in evidence if e in top) / len(evidence)


# ---------------------------------------------------------------------- systems


class FlatRAG:
    """The baseline: cosine top-k over raw turns with the same encoder.

    Args:
        encoder: Any text encoder.
        batch_size: Encoding batch size.
    """

    def __init__(self, encoder: TextEncoder, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.ids: list[str] = []
        self.texts: list[str] = []
        self._vecs = np.zeros((0, int(encoder.dim)), dtype=np.float32)

    def index(self, turns: Sequence[LocomoTurn]) -> None:
        """Index turns (replacing earlier ones)."""
        self.ids = [t.dia_id for t in turns]
        self.texts = [t.content for t in turns]
        self._vecs = np.asarray(self.encoder.encode(self.texts, batch_size=self.batch_size), dtype=np.float32)

    def retrieve(self, question: str, k: int) -> list[str]:
        """The ``k`` turn ids most similar to ``question``."""
        q = np.asarray(self.encoder.encode([question]), dtype=np.float32)[0]
        scores = self._vecs @ q
        order = np.argsort(-scores, kind="stable")[:k]
        return [self.ids[i] for i in order]


def ingest(mem: FluxMemory, sample: LocomoSample, user_id: str | None = None) -> dict[str, str]:
    """Add a conversation session by session; returns ``{node id: dia_id}``."""
    uid = user_id or sample.sample_id
    out: dict[str, str] = {}
    for session in sample.sessions():
        msgs = [
            {
                "role": "user",
                "name": t.speaker,
                "content": t.text,
                "timestamp": t.date_time,
                "metadata": {"dia_id": t.dia_id, "session": t.session},
            }
            for t in session
        ]
        res = mem.add(msgs, user_id=uid, run_id=f"session_{session[0].session}")
        for row, t in zip(res["results"], session):
            out[row["id"]] = t.dia_id
    return out


def fluxmem_retrieve(mem: FluxMemory, question: str, user_id: str, k: int) -> list[str]:
    """The first ``k`` distinct turn ids behind FluxMem's results (facts count via grounding)."""
    res = mem.search(question, user_id=user_id, top_k=2 * k, with_context=False)["results"]
    out: list[str] = []
    for r in res:
        if r["kind"] == "episodic":
            cands = [r["metadata"].get("dia_id")]
        else:
            cands = [
                mem.graph.node(o).metadata.get("dia_id")
                for o, e in mem.graph.neighbors(r["id"], ("ground",))
                if e.source == r["id"]
            ]
        for d in cands:
            if d and d not in out:
                out.append(d)
    return out[:k]


@dataclass
class LocomoReport:
    """Results of :func:`evaluate_locomo`.

    Args:
        recall: ``{system: {k: {category: mean recall}}}``; category ``0`` is the mean over all
            scored questions of categories 1-4.
        f1: ``{system: {category: mean F1}}`` over the questions answered (may be empty).
        counts: Questions scored for recall per category.
        f1_counts: Questions answered per category.
        seconds: Wall time per phase.
        conversations: Conversation ids evaluated.
    """

    recall: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    f1: dict[str, dict[int, float]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    f1_counts: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    conversations: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A Markdown table of recall (and F1 when measured), per category."""
        cats = [*sorted(c for c in self.counts if c != 0), 0]
        head = (
            "| system | metric | "
            + " | ".join(CATEGORY_NAMES.get(c, "cats 1-4") + f" (n={self.counts.get(c, 0)})" for c in cats)
            + " |"
        )
        lines = [head, "|" + "---|" * (len(cats) + 2)]
        for system, by_k in self.recall.items():
            for k, by_cat in sorted(by_k.items()):
                lines.append(
                    f"| {system} | recall@{k} | "
                    + " | ".join(f"{100 * by_cat.get(c, 0.0):.1f}" for c in cats)
                    + " |"
                )
        for system, by_cat in self.f1.items():
            lines.append(
                f"| {system} | F1 | "
                + " | ".join(f"{100 * by_cat[c]:.1f}" if c in by_cat else "-" for c in cats)
                + " |"
            )
        return "\n".join(lines)


def evaluate_locomo(
    path: str | Path,
    encoder: TextEncoder,
    *,
    chat_model: ChatModel | None = None,
    config: FluxMemConfig | None = None,
    limit: int | None = None,
    ks: Sequence[int] = (5, 10),
    categories: Sequence[int] = (1, 2, 3, 4),
    f1_questions: int = 0,
    use_chat_in_memory: bool = False,
    ablation: bool = False,
    show_progress: bool | None = None,
    on_conversation: Callable[[str], None] | None = None,
) -> LocomoReport:
    """Evidence recall@k (and optionally F1) of FluxMem and flat RAG on LoCoMo.

    Args:
        path: ``locomo10.json``.
        encoder: Shared by both systems.
        chat_model: Answers questions for F1; also drives FluxMem's LLM stages when
            ``use_chat_in_memory``.
        config: FluxMem settings.
        limit: Evaluate the first ``limit`` conversations only.
        ks: Recall cut-offs.
        categories: Question categories scored (5 has no evidence turns to recall).
        f1_questions: Questions per conversation answered for F1 (0: none; answering with a
            small CPU model takes seconds per question).
        use_chat_in_memory: Let FluxMem use the chat model on writes (fact extraction and link
            verification); slow, off by default so recall measures the graph itself.
        ablation: Also score ``fluxmem_no_graph``: the same memory searched with
            ``context_weight = 0`` (hybrid dense + BM25 ranking, no link propagation).
        show_progress: Progress bars (default: on a terminal).
        on_conversation: Called with each conversation id when it is done.

    Returns:
        A :class:`LocomoReport`.
    """
    samples = load_locomo(path)[: limit if limit else None]
    report = LocomoReport(conversations=[s.sample_id for s in samples])
    systems: tuple[str, ...] = ("fluxmem", "flat_rag") + (("fluxmem_no_graph",) if ablation else ())
    sums: dict[str, dict[int, dict[int, float]]] = {s: {k: defaultdict(float) for k in ks} for s in systems}
    f1_sums: dict[str, dict[int, float]] = {s: defaultdict(float) for s in systems}
    counts: Counter[int] = Counter()
    f1_counts: Counter[int] = Counter()
    timers: dict[str, float] = defaultdict(float)
    reasoner = MemoryReasoner(chat_model, max_new_tokens=48, max_retries=0)
    kmax = max(ks)
    for sample in progress(samples, desc="LoCoMo", show=show_progress):
        mem = FluxMemory(encoder, chat_model if use_chat_in_memory else None, config)
        flat = FlatRAG(encoder)
        t0 = time.perf_counter()
        ingest(mem, sample)
        timers["fluxmem_ingest"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        flat.index(sample.turns)
        timers["flat_ingest"] += time.perf_counter() - t0
        text_of = {t.dia_id: t.content for t in sample.turns}
        answered = 0
        for qa in sample.qa:
            if qa.category not in categories or not qa.evidence:
                continue
            t0 = time.perf_counter()
            got_f = fluxmem_retrieve(mem, qa.question, sample.sample_id, kmax)
            timers["fluxmem_search"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            got_b = flat.retrieve(qa.question, kmax)
            timers["flat_search"] += time.perf_counter() - t0
            counts[qa.category] += 1
            runs = [("fluxmem", got_f), ("flat_rag", got_b)]
            if ablation:
                weight = mem.config.context_weight
                mem.config.context_weight = 0.0
                runs.append(("fluxmem_no_graph", fluxmem_retrieve(mem, qa.question, sample.sample_id, kmax)))
                mem.config.context_weight = weight
            for system, got in runs:
                for k in ks:
                    sums[system][k][qa.category] += evidence_recall(got, qa.evidence, k)
            if reasoner.enabled and answered < f1_questions:
                answered += 1
                f1_counts[qa.category] += 1
                t0 = time.perf_counter()
                preds = reasoner.answer(
                    [
                        (qa.question, [text_of[d] for d in got_f[:10]]),
                        (qa.question, [text_of[d] for d in got_b[:10]]),
                    ]
                )
                timers["answer"] += time.perf_counter() - t0
                for system, pred in zip(("fluxmem", "flat_rag"), preds):
                    f1_sums[system][qa.category] += locomo_score(pred or "", qa.answer, qa.category)
        if on_conversation is not None:
            on_conversation(sample.sample_id)
    total = sum(counts.values())
    report.counts = {**dict(counts), 0: total}
    report.f1_counts = {**dict(f1_counts), 0: sum(f1_counts.values())}
    for system in systems:
        report.recall[system] = {}
        for k in ks:
            by_cat = {c: sums[system][k][c] / n for c, n in counts.items() if n}
            by_cat[0] = sum(sums[system][k].values()) / total if total else 0.0
            report.recall[system][k] = by_cat
        if f1_counts and system in ("fluxmem", "flat_rag"):
            by = {c: f1_sums[system][c] / n for c, n in f1_counts.items() if n}
            by[0] = sum(f1_sums[system].values()) / max(1, sum(f1_counts.values()))
            report.f1[system] = by
    report.seconds = dict(timers)
    return report


# ---------------------------------------------------------------------- held-out refinement


@dataclass
class RefinementReport:
    """Held-out evidence recall before and after Stage II refinement, next to flat RAG.

    ``recall[system][k][category]`` for systems ``flat_rag``, ``before``, ``after`` (held-out
    half) and ``train_before``/``train_after`` (the half the feedback was given on), ``k`` in
    (5, 10); category 0 is categories 1-4 together.
    """

    conversations: list[str] = field(default_factory=list)
    recall: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    feedback_given: int = 0
    edges_added: int = 0
    edges_removed: int = 0
    nodes_added: int = 0

    def table(self) -> str:
        """A Markdown table: per category and overall."""
        cats = [*sorted(c for c in self.counts if c), 0]
        head = "| system | k | " + " | ".join(
            f"{CATEGORY_NAMES.get(c, 'cats 1-4')} (n={self.counts.get(c, 0)})" for c in cats
        )
        lines = [head + " |", "|---|---|" + "---|" * len(cats)]
        for system in ("flat_rag", "before", "after"):
            for k in (5, 10):
                vals = " | ".join(f"{100 * self.recall[system][k].get(c, 0.0):.1f}" for c in cats)
                lines.append(f"| {system} | {k} | {vals} |")
        return "\n".join(lines)


def heldout_refinement(
    samples: Sequence[LocomoSample],
    encoder: TextEncoder,
    config: FluxMemConfig | None = None,
    *,
    feedback_k: int = 10,
) -> RefinementReport:
    """Ingest, give feedback on the failures of one half of the questions, measure the other.

    Per conversation, the questions of categories 1-4 are split by position (even: feedback
    half, odd: held-out half). Each feedback question whose gold evidence is not all among
    FluxMem's first ``feedback_k`` turns is reported as a failure with that gold evidence
    (``feedback(question, "failure", evidence)``), which runs Stage II. Recall@5/@10 of the
    held-out half is measured before and after, and for flat RAG with the same encoder.
    """
    from zjulab.fluxmem.memory import FluxMemory

    rep = RefinementReport()
    sums: dict[str, dict[int, dict[int, float]]] = {
        s: {5: {}, 10: {}} for s in ("flat_rag", "before", "after", "train_before", "train_after")
    }
    counts: dict[str, dict[int, int]] = {"test": {}, "train": {}}

    def score(system: str, half: str, qa: LocomoQA, got: list[str]) -> None:
        for k in (5, 10):
            r = evidence_recall(got, qa.evidence, k)
            for c in (qa.category, 0):
                sums[system][k][c] = sums[system][k].get(c, 0.0) + r
        if system in ("before", "train_before"):
            for c in (qa.category, 0):
                counts[half][c] = counts[half].get(c, 0) + 1

    for sample in samples:
        rep.conversations.append(sample.sample_id)
        mem = FluxMemory(encoder, config=config)
        node_of = {dia: nid for nid, dia in ingest(mem, sample).items()}
        flat = FlatRAG(encoder)
        flat.index(sample.turns)
        qas = [q for q in sample.qa if q.category in (1, 2, 3, 4) and q.evidence]
        train, test = qas[0::2], qas[1::2]
        uid = sample.sample_id
        for qa in test:
            score("flat_rag", "test", qa, flat.retrieve(qa.question, 10))
            score("before", "test", qa, fluxmem_retrieve(mem, qa.question, uid, 10))
        for qa in train:
            got = fluxmem_retrieve(mem, qa.question, uid, feedback_k)
            score("train_before", "train", qa, got)
            if evidence_recall(got, qa.evidence, feedback_k) < 1.0:
                ev = [node_of[d] for d in qa.evidence if d in node_of]
                fb = mem.feedback(qa.question, "failure", ev, user_id=uid, top_k=feedback_k)
                rep.feedback_given += 1
                for rnd in fb.rounds:
                    rep.edges_added += len(rnd.added_edges)
                    rep.edges_removed += len(rnd.removed_edges)
                    rep.nodes_added += len(rnd.added_nodes)
        for qa in train:
            score("train_after", "train", qa, fluxmem_retrieve(mem, qa.question, uid, feedback_k))
        for qa in test:
            score("after", "test", qa, fluxmem_retrieve(mem, qa.question, uid, 10))
        mem.close()
    for system, by_k in sums.items():
        half = "train" if system.startswith("train") else "test"
        rep.recall[system] = {
            k: {c: v / counts[half][c] for c, v in vals.items() if counts[half].get(c)}
            for k, vals in by_k.items()
        }
    rep.counts = dict(counts["test"])
    return rep
