"""Read and write U-NEED's files, validating every record.

U-NEED ships (on application; only tiny samples are public):

* ``{train,valid,test}_dialogue.json`` -- a JSON array of dialogues; each has ``domain``,
  ``sid``, ``sellerid``, ``userid``, ``ds`` and ``dialogue``, a list of utterances with
  ``seq_no``, ``time``, ``sender_type`` (``用户``/``客服``), ``send_content``, ``act_tag``,
  ``attributes`` (``key``, ``value``, ``start``, ``exclusive_end``; ``-1`` offsets for a value-less
  mention), ``rec_item_id``, ``rec_item_info`` (``"item@category"``) and, in the LLM-CRS
  release, ``rec_item_candidates``.
* ``item_kg.txt`` -- CSV ``item_id_encrypt,seller_id_encrypt,relation_name,value``.
* ``user_action.txt`` -- CSV ``seller_id_encrypt,user_id_encrypt,item_id_encrypt,actime,action_id``.
* ``quality_scores.csv`` (a side file; not part of the public release, which ships no human
  scores for task 5) -- CSV ``sid,seq_no,score`` (and optionally ``reference``, a gold response
  for RUBER's referenced score): one human quality score per assistant
  utterance, keyed by dialogue id and utterance number. :func:`load_uneed_dir` merges it into
  :attr:`Dialogue.quality`.
* ``saved_data/{json,jsonl}/*`` and ``prompt4LLM/*`` -- prepared task samples (``input``,
  ``domain``, ``sid``, ``task_name``, ``label``... plus LLM prompt fields).

Every reader raises :class:`~zjulab.crs.errors.DataFormatError` naming the file and the record
(dialogue index and sid, utterance seq_no, CSV line) on the first malformed entry; with
``strict=False`` an attribute whose offsets do not match its value loses its span instead (the
value is kept) and a warning is logged. Writers are atomic and round-trip losslessly.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zjulab.common.errors import StoreError
from zjulab.common.io import atomic_write_text, read_json, read_jsonl
from zjulab.crs.dialogue import (
    ACT_LABELS,
    ROLE_LABELS,
    Attribute,
    Behaviour,
    Dialogue,
    Item,
    TaskSample,
    Utterance,
    canonical_time,
)
from zjulab.crs.errors import DataFormatError

__all__ = [
    "UNeedCorpus",
    "dialogue_from_record",
    "dialogue_to_record",
    "load_behaviours",
    "load_dialogues",
    "load_items",
    "load_quality_references",
    "load_quality_scores",
    "load_task_samples",
    "load_uneed_dir",
    "save_behaviours",
    "save_dialogues",
    "save_items",
    "save_quality_scores",
    "save_task_samples",
    "save_uneed_dir",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_ROLE_OUT = {v: k for k, v in ROLE_LABELS.items()}
_ACT_OUT = {v: k for k, v in ACT_LABELS.items()}
_KG_HEADER = ["item_id_encrypt", "seller_id_encrypt", "relation_name", "value"]
_ACTION_HEADER = ["seller_id_encrypt", "user_id_encrypt", "item_id_encrypt", "actime", "action_id"]
_QUALITY_HEADER = ["sid", "seq_no", "score"]
SPLITS = ("train", "valid", "test")
QUALITY_FILE = "quality_scores.csv"
"""Name of the side file of human quality scores in a U-NEED directory."""


def _need(rec: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(rec, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(rec).__name__}")
    if key not in rec:
        raise DataFormatError(f"{where}: missing field {key!r}")
    value = rec[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = "/".join(t.__name__ for t in _as_tuple(types))
        raise DataFormatError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _str_id(rec: dict[str, Any], key: str, where: str) -> str:
    value = rec.get(key, "")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise DataFormatError(f"{where}: field {key!r} must be a string id, got {value!r}")
    return str(value)


def _attribute(rec: Any, text: str, where: str, strict: bool) -> Attribute:
    key = _need(rec, "key", str, where)
    value = _need(rec, "value", str, where)
    start = _need(rec, "start", int, where)
    end = _need(rec, "exclusive_end", int, where)
    if not key.strip():
        raise DataFormatError(f"{where}: empty attribute key")
    problem = ""
    if start == -1 and end == -1:
        pass
    elif not (0 <= start < end <= len(text)):
        problem = f"offsets [{start}, {end}) are outside the utterance of length {len(text)}"
    elif text[start:end] != value:
        problem = f"text[{start}:{end}] is {text[start:end]!r}, not the value {value!r}"
    if problem:
        if strict:
            raise DataFormatError(f"{where}: attribute {key!r}: {problem}")
        logger.warning("%s: attribute %r: %s; span dropped", where, key, problem)
        start = end = -1
    return Attribute(key=key, value=value, start=start, end=end)


def _utterance(rec: Any, where: str, strict: bool) -> Utterance:
    seq_no = _need(rec, "seq_no", int, where)
    where = f"{where} (seq_no {seq_no})"
    sender = _need(rec, "sender_type", str, where)
    role = ROLE_LABELS.get(sender, sender)
    if role not in ("user", "assistant"):
        raise DataFormatError(f"{where}: unknown sender_type {sender!r} (expected 用户 or 客服)")
    text = _need(rec, "send_content", str, where)
    act_raw = _need(rec, "act_tag", str, where)
    act = ACT_LABELS.get(act_raw, act_raw)
    if act not in _ACT_OUT:
        if strict:
            raise DataFormatError(
                f"{where}: unknown act_tag {act_raw!r} (expected one of {list(ACT_LABELS)})"
            )
        logger.warning("%s: unknown act_tag %r kept as is", where, act_raw)
    attrs_raw = _need(rec, "attributes", list, where)
    attrs = [_attribute(a, text, f"{where} attribute {j}", strict) for j, a in enumerate(attrs_raw)]
    rec_raw = rec.get("rec_item_id", []) or []
    if not isinstance(rec_raw, list) or not all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in rec_raw
    ):
        raise DataFormatError(f"{where}: field 'rec_item_id' must be a list of item ids, got {rec_raw!r}")
    rec_ids = [str(x) for x in rec_raw]
    rec_info = rec.get("rec_item_info", [])
    if not isinstance(rec_info, list) or not all(isinstance(x, str) for x in rec_info):
        raise DataFormatError(f"{where}: field 'rec_item_info' must be a list of strings, got {rec_info!r}")
    cands_raw = rec.get("rec_item_candidates")
    cands: list[list[str]] | None = None
    if cands_raw is not None:
        if not isinstance(cands_raw, list) or not all(isinstance(c, list) for c in cands_raw):
            raise DataFormatError(f"{where}: field 'rec_item_candidates' must be a list of lists")
        cands = [[str(x) for x in c] for c in cands_raw]
        # one list per recommended item, holding that item (what the protocol ranks)
        problem = ""
        if cands and len(cands) != len(rec_ids):
            problem = f"{len(cands)} candidate lists for {len(rec_ids)} recommended items"
        else:
            missing = [iid for iid, c in zip(rec_ids, cands) if iid not in c]
            if missing:
                problem = f"recommended item {missing[0]!r} is not in its candidate list"
        if problem:
            if strict:
                raise DataFormatError(f"{where}: field 'rec_item_candidates': {problem}")
            logger.warning("%s: rec_item_candidates: %s", where, problem)
    time = rec.get("time", "")
    if not isinstance(time, str):
        raise DataFormatError(f"{where}: field 'time' must be a string, got {time!r}")
    canonical_time(time, f"{where}: field 'time'")  # kept as written; compared in canonical form
    return Utterance(
        seq_no=seq_no,
        role=role,  # type: ignore[arg-type]
        text=text,
        act=act,
        attributes=attrs,
        rec_item_ids=rec_ids,
        rec_item_info=list(rec_info),
        rec_candidates=cands,
        time=time,
    )


def dialogue_from_record(record: Any, where: str = "dialogue", *, strict: bool = True) -> Dialogue:
    """Build a :class:`Dialogue` from one U-NEED JSON object.

    Args:
        record: The parsed JSON object.
        where: Prefix for error messages (file and index).
        strict: Raise on attribute offsets that do not match their value (else drop the span).

    Raises:
        DataFormatError: A required field is missing or has the wrong type, a label is unknown,
            or an attribute span does not match the text.
    """
    sid = _str_id(record, "sid", where) if isinstance(record, dict) else ""
    where = f"{where} (sid {sid!r})" if sid else where
    domain = _need(record, "domain", str, where)
    turns = _need(record, "dialogue", list, where)
    utts = [_utterance(u, f"{where} utterance {i}", strict) for i, u in enumerate(turns)]
    quality_raw = record.get("quality", {})
    if not isinstance(quality_raw, dict):
        raise DataFormatError(f"{where}: field 'quality' must be an object of seq_no -> score")
    try:
        quality = {int(k): float(v) for k, v in quality_raw.items()}
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{where}: field 'quality' has a non-numeric entry: {exc}") from exc
    refs_raw = record.get("references", {})
    if not isinstance(refs_raw, dict) or not all(isinstance(v, str) for v in refs_raw.values()):
        raise DataFormatError(f"{where}: field 'references' must be an object of seq_no -> text")
    try:
        references = {int(k): v for k, v in refs_raw.items()}
    except ValueError as exc:
        raise DataFormatError(f"{where}: field 'references' has a non-integer seq_no: {exc}") from exc
    return Dialogue(
        sid=sid,
        domain=domain,
        utterances=utts,
        seller_id=_str_id(record, "sellerid", where),
        user_id=_str_id(record, "userid", where),
        ds=_str_id(record, "ds", where),
        quality=quality,
        references=references,
    )


def dialogue_to_record(dialogue: Dialogue) -> dict[str, Any]:
    """The U-NEED JSON object of a dialogue (inverse of :func:`dialogue_from_record`)."""
    turns = []
    for u in dialogue.utterances:
        rec: dict[str, Any] = {
            "seq_no": u.seq_no,
            "time": u.time,
            "sender_type": _ROLE_OUT[u.role],
            "send_content": u.text,
            "act_tag": _ACT_OUT.get(u.act, u.act),
            "attributes": [
                {"key": a.key, "value": a.value, "start": a.start, "exclusive_end": a.end}
                for a in u.attributes
            ],
            "rec_item_id": list(u.rec_item_ids),
            "rec_item_info": list(u.rec_item_info),
        }
        if u.rec_candidates is not None:
            rec["rec_item_candidates"] = [list(c) for c in u.rec_candidates]
        turns.append(rec)
    out: dict[str, Any] = {
        "domain": dialogue.domain,
        "sid": dialogue.sid,
        "sellerid": dialogue.seller_id,
        "userid": dialogue.user_id,
        "ds": dialogue.ds,
        "dialogue": turns,
    }
    if dialogue.quality:
        out["quality"] = {str(k): v for k, v in sorted(dialogue.quality.items())}
    if dialogue.references:
        out["references"] = {str(k): v for k, v in sorted(dialogue.references.items())}
    return out


def load_dialogues(path: PathLike, *, strict: bool = True) -> list[Dialogue]:
    """Read a U-NEED dialogue file (a JSON array of dialogues, or JSONL, one per line).

    Raises:
        DataFormatError: The file is not valid JSON or a record is malformed (file, index, sid,
            seq_no and field are named).
    """
    p = Path(path)
    try:
        data = read_jsonl(p) if p.suffix == ".jsonl" else read_json(p)
    except StoreError as exc:
        raise DataFormatError(str(exc)) from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataFormatError(f"{p}: expected a JSON array of dialogues, got {type(data).__name__}")
    return [dialogue_from_record(rec, f"{p}: dialogue {i}", strict=strict) for i, rec in enumerate(data)]


def save_dialogues(path: PathLike, dialogues: Iterable[Dialogue]) -> None:
    """Write dialogues as a U-NEED JSON array (atomic; 4-space indent as in U-NEED)."""
    records = [dialogue_to_record(d) for d in dialogues]
    atomic_write_text(path, json.dumps(records, ensure_ascii=False, indent=4) + "\n")


def _csv_rows(path: Path, header: list[str], optional: Sequence[str] = ()) -> list[tuple[int, list[str]]]:
    """Rows after the header (file:line errors); ``optional`` columns may follow ``header``.

    Rows are returned padded with ``""`` for optional columns the file does not have.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text))
    rows = list(reader)
    got = [h.strip() for h in rows[0]] if rows else []
    allowed = [header + list(optional[:i]) for i in range(len(optional) + 1)]
    if got not in allowed:
        want = " or ".join(",".join(h) for h in allowed)
        raise DataFormatError(f"{path}:1: header must be {want}, got {','.join(got)!r}")
    out = []
    pad = [""] * (len(header) + len(optional) - len(got))
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(got):
            raise DataFormatError(f"{path}:{lineno}: expected {len(got)} fields, got {len(row)}: {row!r}")
        out.append((lineno, row + pad))
    return out


def load_items(path: PathLike) -> dict[str, Item]:
    """Read ``item_kg.txt`` into items keyed by id (tuples kept in file order).

    Raises:
        DataFormatError: Wrong header, wrong field count or an empty id/relation (file:line).
    """
    p = Path(path)
    items: dict[str, Item] = {}
    for lineno, (item_id, seller, relation, value) in _csv_rows(p, _KG_HEADER):
        if not item_id.strip() or not relation.strip():
            raise DataFormatError(f"{p}:{lineno}: empty item id or relation name")
        item = items.setdefault(item_id, Item(item_id=item_id, seller_id=seller))
        item.knowledge.append((relation, value))
    return items


def save_items(path: PathLike, items: Iterable[Item]) -> None:
    """Write items as ``item_kg.txt`` (atomic)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_KG_HEADER)
    for item in items:
        for relation, value in item.knowledge:
            w.writerow([item.item_id, item.seller_id, relation, value])
    atomic_write_text(path, buf.getvalue())


def load_behaviours(path: PathLike) -> list[Behaviour]:
    """Read ``user_action.txt``.

    Raises:
        DataFormatError: Wrong header or field count, a time that is not ``YYYY-MM-DD HH:MM:SS``,
            or a non-integer action id (file:line).
    """
    p = Path(path)
    out = []
    for lineno, (seller, user, item, actime, action) in _csv_rows(p, _ACTION_HEADER):
        if not canonical_time(actime, f"{p}:{lineno}: actime"):
            raise DataFormatError(f"{p}:{lineno}: actime is empty")
        try:
            action_id = int(action)
        except ValueError as exc:
            raise DataFormatError(f"{p}:{lineno}: action_id {action!r} is not an integer") from exc
        out.append(Behaviour(seller_id=seller, user_id=user, item_id=item, time=actime, action=action_id))
    return out


def load_quality_scores(path: PathLike) -> dict[tuple[str, int], float]:
    """Read a ``quality_scores.csv`` side file (``sid,seq_no,score[,reference]``).

    Returns:
        ``{(sid, seq_no): score}``.

    Raises:
        DataFormatError: The file is missing or not UTF-8, wrong header or field count, an
            empty sid, a non-integer ``seq_no``, a non-finite score, or a ``(sid, seq_no)`` given
            twice (file:line).
    """
    return {k: score for k, (score, _) in _read_quality(Path(path)).items()}


def load_quality_references(path: PathLike) -> dict[tuple[str, int], str]:
    """The gold responses of a ``quality_scores.csv`` with the optional ``reference`` column.

    Returns:
        ``{(sid, seq_no): reference}`` for the rows whose reference is not empty.

    Raises:
        DataFormatError: As :func:`load_quality_scores`.
    """
    return {k: ref for k, (_, ref) in _read_quality(Path(path)).items() if ref}


def _read_quality(p: Path) -> dict[tuple[str, int], tuple[float, str]]:
    import math

    out: dict[tuple[str, int], tuple[float, str]] = {}
    first: dict[tuple[str, int], int] = {}
    for lineno, (sid, seq, score, reference) in _csv_rows(p, _QUALITY_HEADER, ("reference",)):
        sid = sid.strip()
        if not sid:
            raise DataFormatError(f"{p}:{lineno}: empty sid")
        try:
            seq_no = int(seq)
        except ValueError as exc:
            raise DataFormatError(f"{p}:{lineno}: seq_no {seq!r} is not an integer") from exc
        try:
            value = float(score)
        except ValueError as exc:
            raise DataFormatError(f"{p}:{lineno}: score {score!r} is not a number") from exc
        if not math.isfinite(value):
            raise DataFormatError(f"{p}:{lineno}: score {score!r} is not finite")
        key = (sid, seq_no)
        if key in out:
            raise DataFormatError(
                f"{p}:{lineno}: sid {sid} seq_no {seq_no} already scored on line {first[key]}"
            )
        out[key] = (value, reference.strip())
        first[key] = lineno
    return out


def save_quality_scores(path: PathLike, dialogues: Iterable[Dialogue]) -> None:
    """Write the dialogues' quality scores as a ``quality_scores.csv`` side file (atomic).

    The ``reference`` column is written when any dialogue has a reference for a scored turn.
    """
    ds = list(dialogues)
    with_refs = any(seq in d.references for d in ds for seq in d.quality)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_QUALITY_HEADER + (["reference"] if with_refs else []))
    for d in ds:
        for seq_no, score in sorted(d.quality.items()):
            row = [d.sid, seq_no, repr(float(score))]
            w.writerow([*row, d.references.get(seq_no, "")] if with_refs else row)
    atomic_write_text(path, buf.getvalue())


def _merge_quality(corpus: UNeedCorpus, path: Path) -> None:
    scores = _read_quality(path)
    utts = {(d.sid, u.seq_no): (d, u) for ds in corpus.dialogues.values() for d in ds for u in d.utterances}
    for (sid, seq_no), (value, reference) in scores.items():
        hit = utts.get((sid, seq_no))
        if hit is None:
            raise DataFormatError(f"{path}: sid {sid} seq_no {seq_no} is no utterance of any dialogue file")
        d, u = hit
        if u.is_user:
            raise DataFormatError(
                f"{path}: sid {sid} seq_no {seq_no} is a user utterance; scores rate assistant turns"
            )
        d.quality[seq_no] = value
        if reference:
            d.references[seq_no] = reference


def save_behaviours(path: PathLike, behaviours: Iterable[Behaviour]) -> None:
    """Write behaviours as ``user_action.txt`` (atomic)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_ACTION_HEADER)
    for b in behaviours:
        w.writerow([b.seller_id, b.user_id, b.item_id, b.time, b.action])
    atomic_write_text(path, buf.getvalue())


_SAMPLE_FIELDS = (
    "input",
    "domain",
    "user_id",
    "sid",
    "seller_id",
    "task_name",
    "sample_index_in_dialogue",
    "sample_id",
    "label",
)


def _task_sample(rec: Any, where: str) -> TaskSample:
    inputs = _need(rec, "input", list, where)
    if not all(isinstance(x, str) for x in inputs):
        raise DataFormatError(f"{where}: field 'input' must be a list of strings")
    return TaskSample(
        input=list(inputs),
        domain=_need(rec, "domain", str, where),
        sid=_str_id(rec, "sid", where),
        task_name=_need(rec, "task_name", str, where),
        label=_need(rec, "label", str, where),
        user_id=_str_id(rec, "user_id", where),
        seller_id=_str_id(rec, "seller_id", where),
        sample_index_in_dialogue=int(_need(rec, "sample_index_in_dialogue", int, where))
        if "sample_index_in_dialogue" in rec
        else 0,
        sample_id=int(_need(rec, "sample_id", int, where)) if "sample_id" in rec else 0,
        extra={k: v for k, v in rec.items() if k not in _SAMPLE_FIELDS},
    )


def load_task_samples(path: PathLike) -> list[TaskSample]:
    """Read prepared task samples (``saved_data`` JSON/JSONL or ``prompt4LLM`` JSON).

    Raises:
        DataFormatError: Invalid JSON or a malformed record (file and record index named).
    """
    p = Path(path)
    try:
        data = read_jsonl(p) if p.suffix == ".jsonl" else read_json(p)
    except StoreError as exc:
        raise DataFormatError(str(exc)) from exc
    if not isinstance(data, list):
        raise DataFormatError(f"{p}: expected a JSON array of samples, got {type(data).__name__}")
    line = "line" if p.suffix == ".jsonl" else "record"
    return [_task_sample(r, f"{p}: {line} {i + (1 if line == 'line' else 0)}") for i, r in enumerate(data)]


def _sample_record(s: TaskSample) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "input": list(s.input),
        "domain": s.domain,
        "user_id": s.user_id,
        "sid": s.sid,
        "seller_id": s.seller_id,
        "task_name": s.task_name,
        "sample_index_in_dialogue": s.sample_index_in_dialogue,
        "sample_id": s.sample_id,
        "label": s.label,
    }
    rec.update(s.extra)
    return rec


def save_task_samples(path: PathLike, samples: Sequence[TaskSample]) -> None:
    """Write task samples as JSON (``.json``, 2-space indent) or JSONL (``.jsonl``), atomically."""
    p = Path(path)
    recs = [_sample_record(s) for s in samples]
    if p.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    else:
        text = json.dumps(recs, ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(p, text)


@dataclass
class UNeedCorpus:
    """Dialogues by split, items by id and user behaviours: one data set in U-NEED's format.

    Args:
        dialogues: ``{"train": [...], "valid": [...], "test": [...]}`` (missing splits empty).
        items: Items keyed by id.
        behaviours: User behaviour records.
        name: A label for reports.
        root: The directory it was read from (``None`` when built in memory).
    """

    dialogues: dict[str, list[Dialogue]] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    behaviours: list[Behaviour] = field(default_factory=list)
    name: str = "u-need"
    root: Path | None = None

    def split(self, name: str) -> list[Dialogue]:
        """One split's dialogues (empty when absent)."""
        return self.dialogues.get(name, [])

    def categories(self) -> list[str]:
        """Sorted canonical category names present in any split."""
        return sorted({d.category for ds in self.dialogues.values() for d in ds})


def load_uneed_dir(path: PathLike, *, strict: bool = True, name: str | None = None) -> UNeedCorpus:
    """Read a U-NEED directory.

    The directory holds ``{train,valid,test}_dialogue.json``, ``item_kg.txt`` and
    ``user_action.txt`` (each optional, but at least one dialogue file is required), and
    optionally the ``quality_scores.csv`` side file of human scores (task 5), merged into the
    dialogues' ``quality``.

    Raises:
        DataFormatError: No dialogue file, any malformed record, or a score for an utterance
            that does not exist or is the user's.
    """
    root = Path(path)
    corpus = UNeedCorpus(name=name or root.name)
    for split in SPLITS:
        f = root / f"{split}_dialogue.json"
        if f.is_file():
            corpus.dialogues[split] = load_dialogues(f, strict=strict)
    if not corpus.dialogues:
        raise DataFormatError(f"{root}: no train/valid/test_dialogue.json found")
    if (root / "item_kg.txt").is_file():
        corpus.items = load_items(root / "item_kg.txt")
    if (root / "user_action.txt").is_file():
        corpus.behaviours = load_behaviours(root / "user_action.txt")
    if (root / QUALITY_FILE).is_file():
        _merge_quality(corpus, root / QUALITY_FILE)
    corpus.root = root
    logger.info(
        "loaded %s: %s dialogues, %d items, %d behaviours",
        root,
        {k: len(v) for k, v in corpus.dialogues.items()},
        len(corpus.items),
        len(corpus.behaviours),
    )
    return corpus


def save_uneed_dir(path: PathLike, corpus: UNeedCorpus) -> None:
    """Write a corpus in the layout :func:`load_uneed_dir` reads."""
    root = Path(path)
    for split, dialogues in corpus.dialogues.items():
        save_dialogues(root / f"{split}_dialogue.json", dialogues)
    save_items(root / "item_kg.txt", corpus.items.values())
    save_behaviours(root / "user_action.txt", corpus.behaviours)
