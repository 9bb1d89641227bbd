"""Export a trace as OpenTelemetry spans (optional ``[otel]`` extra).

One root span covers the trace; each operation becomes a child span (nested operations under
their parent) with its recorded start and end times. Attributes follow the OpenTelemetry
GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.request.temperature``...) and the OpenInference conventions that Arize Phoenix reads
(``openinference.span.kind``, ``input.value``, ``output.value``), plus ``memtrace.*``
attributes with the graph ids, so the spans open in Phoenix, Langfuse or any OTLP backend.
The redaction hook runs on every value before it becomes an attribute.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zjulab.memtrace.attribution import Attribution
from zjulab.memtrace.graph import Operation, Trace
from zjulab.memtrace.judges import describe_value
from zjulab.memtrace.redaction import DEFAULT_REDACTOR, RedactFn, apply_redaction, redact_text

__all__ = ["GENAI_OPERATION", "OPENINFERENCE_KIND", "export_otel", "span_attributes"]

logger = logging.getLogger(__name__)

GENAI_OPERATION: dict[str, str] = {
    "generate": "chat",
    "answer": "chat",
    "chat": "chat",
    "summarise": "chat",
    "summarize": "chat",
    "embed": "embeddings",
}
"""``gen_ai.operation.name`` by operation kind (other kinds use the kind itself)."""

OPENINFERENCE_KIND: dict[str, str] = {
    "generate": "LLM",
    "answer": "LLM",
    "chat": "LLM",
    "retrieve": "RETRIEVER",
    "search": "RETRIEVER",
    "rerank": "RERANKER",
    "embed": "EMBEDDING",
}
"""``openinference.span.kind`` by operation kind (others are ``CHAIN``)."""


def _text(value: Any, redact: RedactFn | None, max_chars: int) -> str:
    return redact_text(describe_value(apply_redaction(value, redact), max_chars), redact)


def span_attributes(
    trace: Trace,
    op: Operation,
    *,
    redact: RedactFn | None = DEFAULT_REDACTOR,
    max_chars: int = 4000,
    attribution: Attribution | None = None,
) -> dict[str, Any]:
    """The attributes of one operation's span."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": GENAI_OPERATION.get(op.kind, op.kind),
        "openinference.span.kind": OPENINFERENCE_KIND.get(op.kind, "CHAIN"),
        "memtrace.trace.id": trace.id,
        "memtrace.operation.id": op.id,
        "memtrace.operation.name": op.name,
        "memtrace.operation.kind": op.kind,
        "memtrace.operation.label": trace.operation_label(op.id),
        "memtrace.inputs": list(op.inputs),
        "memtrace.outputs": list(op.outputs),
        "memtrace.duration_ms": op.duration_ms,
    }
    if op.model_id:
        attrs["gen_ai.request.model"] = op.model_id
        attrs["llm.model_name"] = op.model_id
    for key, name in (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p")):
        if isinstance(op.params.get(key), (int, float)):
            attrs[name] = float(op.params[key])
    for key in ("max_new_tokens", "max_tokens"):
        if isinstance(op.params.get(key), int):
            attrs["gen_ai.request.max_tokens"] = op.params[key]
    if op.prompt:
        attrs["memtrace.prompt"] = _text(op.prompt, redact, max_chars)
        attrs["gen_ai.system_instructions"] = _text(op.prompt, redact, max_chars)
    inputs = {trace.variables[v].label: trace.variables[v].value for v in op.inputs}
    outputs = {trace.variables[v].label: trace.variables[v].value for v in op.outputs}
    attrs["input.value"] = _text(inputs, redact, max_chars)
    attrs["output.value"] = _text(outputs, redact, max_chars)
    attrs["input.mime_type"] = attrs["output.mime_type"] = "application/json"
    if attrs["gen_ai.operation.name"] == "chat":
        msgs = [{"role": "user", "parts": [{"type": "text", "content": _text(inputs, redact, max_chars)}]}]
        out = [
            {"role": "assistant", "parts": [{"type": "text", "content": _text(outputs, redact, max_chars)}]}
        ]
        attrs["gen_ai.input.messages"] = json.dumps(msgs, ensure_ascii=False)
        attrs["gen_ai.output.messages"] = json.dumps(out, ensure_ascii=False)
    if op.params:
        attrs["memtrace.params"] = _text(op.params, redact, max_chars)
    if op.error:
        attrs["error.type"] = op.error.split("(", 1)[0]
    if attribution is not None:
        v = attribution.verdicts.get(op.id)
        if v is not None:
            attrs["memtrace.judge.faulty"] = v.faulty
        if op.id in attribution.decisive_ops:
            attrs["memtrace.decisive"] = True
            attrs["memtrace.failure_mode"] = next(d.mode for d in attribution.decisive if d.op_id == op.id)
    return attrs


def export_otel(
    trace: Trace,
    *,
    tracer_provider: Any = None,
    redact: RedactFn | None = DEFAULT_REDACTOR,
    attribution: Attribution | None = None,
    max_chars: int = 4000,
) -> list[Any]:
    """Emit the trace as OpenTelemetry spans.

    Args:
        trace: The trace.
        tracer_provider: An ``opentelemetry.sdk.trace.TracerProvider`` (the global provider
            when omitted). Attach an exporter (OTLP for Phoenix / Langfuse) to it.
        redact: Redaction of every value (on by default; ``None`` turns it off).
        attribution: Marks decisive operations (``memtrace.decisive``, ``memtrace.failure_mode``).
        max_chars: Longest attribute text.

    Returns:
        The ended spans, root first.

    Raises:
        MissingDependencyError: ``opentelemetry`` is not installed (``pip install 'zjulab-memtrace[otel]'``).
    """
    from zjulab.common.deps import require

    require("opentelemetry.trace", "pip install 'zjulab-memtrace[otel]'", feature="OpenTelemetry export")
    from opentelemetry import trace as ot
    from opentelemetry.trace import Status, StatusCode

    tracer = (tracer_provider or ot.get_tracer_provider()).get_tracer("zjulab.memtrace")
    ops = [trace.operations[o] for o in trace.topological_operations()]
    starts = [o.start_ns for o in ops if o.start_ns] or [0]
    ends = [o.end_ns for o in ops if o.end_ns] or [0]
    root = tracer.start_span(
        f"memtrace {trace.name}",
        start_time=min(starts) or None,
        attributes={
            "memtrace.trace.id": trace.id,
            "memtrace.trace.name": trace.name,
            "openinference.span.kind": "CHAIN",
            "memtrace.final": trace.final or "",
            "output.value": _text(trace.final_value, redact, max_chars),
        },
    )
    spans: list[Any] = [root]
    by_op: dict[str, Any] = {}
    for op in sorted(ops, key=lambda o: (o.start_ns, o.id)):
        parent = by_op.get(op.parent) if op.parent else None
        ctx = ot.set_span_in_context(parent if parent is not None else root)
        span = tracer.start_span(
            op.name,
            context=ctx,
            start_time=op.start_ns or None,
            attributes=span_attributes(
                trace, op, redact=redact, max_chars=max_chars, attribution=attribution
            ),
        )
        if op.error:
            span.set_status(Status(StatusCode.ERROR, redact_text(op.error, redact)))
        by_op[op.id] = span
        spans.append(span)
    for op in sorted(ops, key=lambda o: o.end_ns):
        by_op[op.id].end(end_time=op.end_ns or None)
    root.end(end_time=max(ends) or None)
    return spans
