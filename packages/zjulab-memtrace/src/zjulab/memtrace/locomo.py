"""Read LoCoMo conversations (``locomo10.json``) by path.

LoCoMo (snap-research/LoCoMo, CC BY-NC 4.0) is not shipped with this package; pass the path
of ``locomo10.json``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zjulab.memtrace.errors import TraceFileError

__all__ = ["LocomoConversation", "LocomoQA", "LocomoTurn", "find_locomo", "load_locomo"]

_SESSION = re.compile(r"^session_(\d+)$")


@dataclass(frozen=True)
class LocomoTurn:
    """One dialogue turn.

    Args:
        dia_id: LoCoMo turn id (``"D1:3"``).
        speaker: Speaker name.
        text: What was said (an image caption is appended in brackets).
        session: 1-based session number.
    """

    dia_id: str
    speaker: str
    text: str
    session: int

    @property
    def line(self) -> str:
        """``"Speaker: text"`` — the form pipelines store."""
        return f"{self.speaker}: {self.text}"


@dataclass(frozen=True)
class LocomoQA:
    """One question with its gold answer and evidence turn ids."""

    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


@dataclass
class LocomoConversation:
    """One LoCoMo conversation.

    Args:
        sample_id: Conversation id (``"conv-26"``).
        sessions: Session number -> turns, in order.
        qa: Questions with an answer (adversarial ones without an answer are left out).
    """

    sample_id: str
    sessions: dict[int, list[LocomoTurn]] = field(default_factory=dict)
    qa: list[LocomoQA] = field(default_factory=list)

    def turn(self, dia_id: str) -> LocomoTurn | None:
        """The turn with this id, or None."""
        for turns in self.sessions.values():
            for t in turns:
                if t.dia_id == dia_id:
                    return t
        return None


def _turn(raw: dict[str, Any], session: int) -> LocomoTurn:
    text = str(raw.get("text", ""))
    cap = raw.get("blip_caption")
    if cap:
        text = f"{text} [shares a photo: {cap}]"
    return LocomoTurn(str(raw.get("dia_id", "")), str(raw.get("speaker", "")), text, session)


def _conversation(conv: Any, i: int) -> LocomoConversation:
    if not isinstance(conv, dict) or "conversation" not in conv:
        raise KeyError("no 'conversation' field")
    c = LocomoConversation(str(conv.get("sample_id", f"conv-{i}")))
    for key, turns in conv["conversation"].items():
        m = _SESSION.match(key)
        if m and isinstance(turns, list):
            s = int(m.group(1))
            c.sessions[s] = [_turn(t, s) for t in turns if isinstance(t, dict)]
    c.sessions = dict(sorted(c.sessions.items()))
    for q in conv.get("qa", []):
        if "answer" not in q:
            continue
        c.qa.append(
            LocomoQA(
                str(q["question"]),
                str(q["answer"]),
                tuple(str(e) for e in q.get("evidence", [])),
                int(q.get("category", 0)),
            )
        )
    return c


def load_locomo(path: str | os.PathLike[str]) -> list[LocomoConversation]:
    """Load ``locomo10.json``.

    Raises:
        TraceFileError: The file is missing, not JSON, or not LoCoMo-shaped.
    """
    from zjulab.memtrace.store import read_untrusted_json

    data = read_untrusted_json(Path(path))
    if not isinstance(data, list):
        raise TraceFileError(f"{path}: expected a JSON list of conversations, got {type(data).__name__}")
    out = []
    for i, conv in enumerate(data):
        try:
            out.append(_conversation(conv, i))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TraceFileError(
                f"{path}: conversation {i} is not LoCoMo-shaped ({type(exc).__name__}: {exc})"
            ) from None
    return out


def find_locomo(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``locomo10.json``.

    ``path`` wins; then ``$ZJULAB_SHARED_DATA/locomo/locomo10.json``; then
    ``shared/data/locomo/locomo10.json`` beside any ancestor of the working directory or of
    this file.

    Raises:
        TraceFileError: Not found.
    """
    if path is not None:
        return Path(path)
    rel = Path("locomo") / "locomo10.json"
    env = os.environ.get("ZJULAB_SHARED_DATA")
    if env and (Path(env) / rel).is_file():
        return Path(env) / rel
    for start in (Path.cwd().resolve(), Path(__file__).resolve()):
        for parent in [start, *start.parents]:
            cand = parent / "shared" / "data" / rel
            if cand.is_file():
                return cand
    raise TraceFileError("locomo10.json not found: pass its path (or set ZJULAB_SHARED_DATA)")
