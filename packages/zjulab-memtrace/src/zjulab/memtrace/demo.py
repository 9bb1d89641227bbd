"""The end-to-end demonstration behind ``zjulab-memtrace demo``.

A short LoCoMo-style dialogue (three sessions between two friends, written for this package)
goes through the Mem0-style pipeline with one planted fault: the extraction of the second
session drops the turn that answers the question. The run is traced, saved, attributed, and
drawn with the decisive error highlighted.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zjulab.common.errors import ModelNotAvailableError
from zjulab.common.protocols import TextEncoder
from zjulab.memtrace.attribution import Attribution, attribute
from zjulab.memtrace.errors import OutputExistsError
from zjulab.memtrace.gold import Gold
from zjulab.memtrace.judges import ChatJudge, EvidenceJudge, Judge
from zjulab.memtrace.outputs import check_replaceable
from zjulab.memtrace.pipelines import Fault, Mem0Pipeline
from zjulab.memtrace.render import write_picture
from zjulab.memtrace.store import save_trace

__all__ = ["DEMO_GOLD", "DEMO_SESSIONS", "DemoResult", "run_demo"]

logger = logging.getLogger(__name__)

DEMO_SESSIONS: list[list[str]] = [
    [
        "Nora: Hi Sam! I finally finished the pottery course at the community centre.",
        "Sam: Congrats! I spent the weekend hiking near the lake with my brother.",
        "Nora: Nice. My sister is visiting from Lisbon next month.",
        "Sam: Tell her I said hello. I am still learning to play the cello.",
    ],
    [
        "Nora: Big news, I adopted a rescue dog last Saturday and named her Biscuit.",
        "Sam: That is lovely! What breed is she?",
        "Nora: A beagle mix, she loves long walks in the park.",
        "Sam: I started volunteering at the food bank on Tuesdays.",
    ],
    [
        "Nora: Work has been hectic, we launched the new bakery menu.",
        "Sam: I tried your cinnamon rolls, they were amazing.",
        "Nora: Thanks! I am planning a trip to Kyoto in the spring.",
        "Sam: Kyoto in spring sounds perfect for the cherry blossoms.",
    ],
]
"""Three sessions of ``"Speaker: text"`` turns."""

DEMO_GOLD = Gold(
    answer="Biscuit",
    evidence=("Nora: Big news, I adopted a rescue dog last Saturday and named her Biscuit.",),
    question="What did Nora name her rescue dog?",
)
"""The question asked after the dialogue, with its gold answer and evidence."""


@dataclass
class DemoResult:
    """What the demo produced.

    Args:
        answer: The pipeline's (wrong) answer.
        attribution: The attribution.
        trace_path: The saved trace.
        pictures: The HTML and DOT pictures.
        encoder_id: The encoder the pipeline used.
    """

    answer: Any
    attribution: Attribution
    trace_path: Path
    pictures: list[Path]
    encoder_id: str


TORCH_INSTALL = "pip install 'zjulab-memtrace[torch]'"


def _encoder(kind: str, device: str) -> TextEncoder:
    if kind == "embedded":
        from zjulab.common.deps import require

        require("torch", TORCH_INSTALL, feature="the embedded demo encoder")
        from zjulab.common.defaults import default_encoder

        try:
            return default_encoder(device=device)  # type: ignore[no-any-return]
        except ModelNotAvailableError as exc:
            logger.warning("%s; falling back to the hashing encoder", exc)
    from zjulab.common.testing import HashingEncoder

    return HashingEncoder(512)


def run_demo(
    out_dir: str | os.PathLike[str] = "memtrace-demo",
    *,
    judge: str = "evidence",
    encoder: str = "embedded",
    device: str = "cpu",
) -> DemoResult:
    """Run the faulty Mem0-style pipeline, attribute the wrong answer, draw the trace.

    Args:
        out_dir: Where the trace, attribution and pictures go.
        judge: ``"evidence"`` (follows the gold evidence) or ``"chat"`` (the embedded chat
            model through structured output).
        encoder: ``"embedded"`` (MiniLM-L6 on torch; falls back to hashing when the model
            package is absent) or ``"hashing"`` (no torch needed).
        device: Device of the embedded models.

    Returns:
        The demo result.

    Raises:
        OutputExistsError: ``out_dir`` is a file, or holds a ``trace.*`` file this library did
            not write.
        MissingDependencyError: ``encoder="embedded"`` or ``judge="chat"`` without torch
            (``pip install 'zjulab-memtrace[torch]'``).
    """
    out = Path(out_dir)
    targets = [out / n for n in ("trace.json", "trace.attribution.json", "trace.html", "trace.dot")]
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: is a file; the demo writes into a folder")
    for t in targets:  # a user's file of the same name is never replaced
        check_replaceable(t)
    enc = _encoder(encoder, device)
    fault = Fault("extract", "drop", DEMO_GOLD.evidence[0], occurrence=1)
    pipe = Mem0Pipeline(enc, faults=[fault])
    answer, trace = pipe.run(DEMO_SESSIONS, DEMO_GOLD.question or "")
    j: Judge
    if judge == "chat":
        from zjulab.common.deps import require

        require("torch", TORCH_INSTALL, feature="the embedded chat-model judge")
        from zjulab.common.defaults import default_chat_model

        j = ChatJudge(default_chat_model(device=device))
    else:
        j = EvidenceJudge()
    att = attribute(trace, DEMO_GOLD, j)
    trace_path = save_trace(trace, out / "trace.json")
    from zjulab.common.io import write_json
    from zjulab.memtrace.outputs import utf8_safe

    write_json(out / "trace.attribution.json", utf8_safe(att.to_dict()))
    pics = write_picture(trace, out / "trace", att)
    return DemoResult(answer, att, trace_path, pics, getattr(enc, "model_id", type(enc).__name__))
