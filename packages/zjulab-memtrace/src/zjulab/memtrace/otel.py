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

__all__ = [
    "GENAI_OPERATION",
    "OPENINFERENCE_KIND",
    "LiveExporter",
    "export_otel",
    "root_attributes",
    "span_attributes",
]

logger = logging.getLogger(__name__)

GENAI_OPERATION: dict[str, str] = {
    "generate": "chat",
    "answer": "chat",
    "chat": "chat",
    "summarise": "chat",
    "summarize": "chat",
    "complete": "text_completion",
    "embed": "embeddings",
    "tool": "execute_tool",
}
"""``gen_ai.operation.name`` (a value of the GenAI semantic conventions) by operation kind.

Kinds the conventions do not cover (extract, update, retrieve...) carry no
``gen_ai.operation.name``; their kind is in ``memtrace.operation.kind``.
"""

OPENINFERENCE_KIND: dict[str, str] = {
    "generate": "LLM",
    "answer": "LLM",
    "chat": "LLM",
    "summarise": "LLM",
    "summarize": "LLM",
    "complete": "LLM",
    "retrieve": "RETRIEVER",
    "search": "RETRIEVER",
    "rerank": "RERANKER",
    "embed": "EMBEDDING",
    "tool": "TOOL",
}
"""``openinference.span.kind`` by operation kind (others are ``CHAIN``)."""


def _text(value: Any, redact: RedactFn | None, max_chars: int) -> str:
    return redact_text(describe_value(apply_redaction(value, redact), max_chars), redact)


def _json_value(value: Any, redact: RedactFn | None, max_chars: int) -> tuple[str, str]:
    """``(text, mime type)``: JSON when it fits in ``max_chars``, else a cut plain text."""
    red = apply_redaction(value, redact)
    try:
        text = json.dumps(red, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = None
    if text is not None:
        text = redact_text(text, redact)
        if len(text) <= max_chars:
            return text, "application/json"
    return _text(value, redact, max_chars), "text/plain"


def span_attributes(
    trace: Trace,
    op: Operation,
    *,
    redact: RedactFn | None = DEFAULT_REDACTOR,
    max_chars: int = 4000,
    attribution: Attribution | None = None,
) -> dict[str, Any]:
    """The attributes of one operation's span (GenAI semantic conventions + OpenInference)."""
    kind = OPENINFERENCE_KIND.get(op.kind, "CHAIN")
    attrs: dict[str, Any] = {
        "openinference.span.kind": kind,
        "memtrace.trace.id": trace.id,
        "memtrace.operation.id": op.id,
        "memtrace.operation.name": op.name,
        "memtrace.operation.kind": op.kind,
        "memtrace.operation.label": trace.operation_label(op.id),
        "memtrace.inputs": list(op.inputs),
        "memtrace.outputs": list(op.outputs),
        "memtrace.duration_ms": op.duration_ms,
    }
    genai = GENAI_OPERATION.get(op.kind)
    if genai:
        attrs["gen_ai.operation.name"] = genai
    provider = op.meta.get("provider")
    if isinstance(provider, str) and provider:
        attrs["gen_ai.provider.name"] = provider
        attrs["llm.provider"] = provider
    if op.model_id:
        attrs["gen_ai.request.model"] = attrs["llm.model_name"] = redact_text(op.model_id, redact)
    for key, name in (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p")):
        if isinstance(op.params.get(key), (int, float)) and not isinstance(op.params.get(key), bool):
            attrs[name] = float(op.params[key])
    for key in ("max_new_tokens", "max_tokens"):
        if isinstance(op.params.get(key), int) and not isinstance(op.params.get(key), bool):
            attrs["gen_ai.request.max_tokens"] = op.params[key]
    usage = op.meta.get("usage") or {}
    if isinstance(usage, dict):
        it, ot_ = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(it, int) and isinstance(ot_, int):
            attrs["gen_ai.usage.input_tokens"] = it
            attrs["gen_ai.usage.output_tokens"] = ot_
            attrs["llm.token_count.prompt"] = it
            attrs["llm.token_count.completion"] = ot_
            attrs["llm.token_count.total"] = it + ot_
    if op.prompt:
        attrs["memtrace.prompt"] = _text(op.prompt, redact, max_chars)
        attrs["gen_ai.system_instructions"] = json.dumps(
            [{"type": "text", "content": _text(op.prompt, redact, max_chars)}], ensure_ascii=False
        )
    inputs = {trace.variables[v].label: trace.variables[v].value for v in op.inputs}
    outputs = {trace.variables[v].label: trace.variables[v].value for v in op.outputs}
    attrs["input.value"], attrs["input.mime_type"] = _json_value(inputs, redact, max_chars)
    attrs["output.value"], attrs["output.mime_type"] = _json_value(outputs, redact, max_chars)
    if kind == "RETRIEVER" and op.outputs:
        docs = trace.variables[op.outputs[0]].value
        if isinstance(docs, (list, tuple)):
            for i, doc in enumerate(docs):
                attrs[f"retrieval.documents.{i}.document.id"] = str(i)
                attrs[f"retrieval.documents.{i}.document.content"] = _text(doc, redact, max_chars)
    if kind == "LLM":
        user = _text(inputs, redact, max_chars)
        answer = _text(outputs, redact, max_chars)
        msgs = []
        if op.prompt:
            msgs.append(("system", _text(op.prompt, redact, max_chars)))
        msgs.append(("user", user))
        for i, (role, content) in enumerate(msgs):
            attrs[f"llm.input_messages.{i}.message.role"] = role
            attrs[f"llm.input_messages.{i}.message.content"] = content
        attrs["llm.output_messages.0.message.role"] = "assistant"
        attrs["llm.output_messages.0.message.content"] = answer
        attrs["gen_ai.input.messages"] = json.dumps(
            [{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in msgs if r != "system"],
            ensure_ascii=False,
        )
        attrs["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}],
            ensure_ascii=False,
        )
        if op.params:
            attrs["llm.invocation_parameters"] = _json_value(op.params, redact, max_chars)[0]
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
    from zjulab.memtrace.outputs import utf8_safe

    # OTLP encodes attributes as UTF-8: a lone surrogate would fail the whole export batch
    return {k: utf8_safe(v) if isinstance(v, (str, list)) else v for k, v in attrs.items()}


def root_attributes(
    trace: Trace, *, redact: RedactFn | None = DEFAULT_REDACTOR, max_chars: int = 4000
) -> dict[str, Any]:
    """Attributes of a trace's root span (valid JSON where the mime type says JSON)."""
    from zjulab.memtrace.outputs import utf8_safe

    out, mime = _json_value(trace.final_value, redact, max_chars)
    return utf8_safe(
        {
            "memtrace.trace.id": trace.id,
            "memtrace.trace.name": redact_text(trace.name, redact),
            "openinference.span.kind": "CHAIN",
            "memtrace.final": trace.final or "",
            "output.value": out,
            "output.mime_type": mime,
        }
    )


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
    from zjulab.memtrace.outputs import utf8_safe

    root = tracer.start_span(
        utf8_safe(f"memtrace {redact_text(trace.name, redact)}"),
        start_time=min(starts) or None,
        attributes=root_attributes(trace, redact=redact, max_chars=max_chars),
    )
    spans: list[Any] = [root]
    by_op: dict[str, Any] = {}
    for op in sorted(ops, key=lambda o: (o.start_ns, o.id)):
        parent = by_op.get(op.parent) if op.parent else None
        ctx = ot.set_span_in_context(parent if parent is not None else root)
        span = tracer.start_span(
            utf8_safe(op.name),
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


class LiveExporter:
    """Live OpenTelemetry spans: each operation's span starts when it starts and ends when it ends.

    Pass it to the tracer, ``Tracer(listeners=[LiveExporter(provider)])``; spans go through the
    provider's span processors (a ``BatchSpanProcessor`` with an OTLP exporter sends them to
    Phoenix, Langfuse or a collector while the pipeline runs). Each trace gets a root span;
    nested operations are children of their parent's span. Attributes are those of
    :func:`span_attributes`, redacted by default.

    Args:
        tracer_provider: An ``opentelemetry.sdk.trace.TracerProvider`` (the global one when omitted).
        redact: Redaction of every value (on by default; ``None`` turns it off).
        max_chars: Longest attribute text.
    """

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        redact: RedactFn | None = DEFAULT_REDACTOR,
        max_chars: int = 4000,
    ):
        from zjulab.common.deps import require

        require("opentelemetry.trace", "pip install 'zjulab-memtrace[otel]'", feature="OpenTelemetry export")
        from opentelemetry import trace as ot

        self._ot = ot
        self._tracer = (tracer_provider or ot.get_tracer_provider()).get_tracer("zjulab.memtrace")
        self.redact = redact
        self.max_chars = max_chars
        self._roots: dict[str, Any] = {}
        self._spans: dict[tuple[str, str], Any] = {}

    def on_trace_start(self, trace: Trace) -> None:  # noqa: D102
        from zjulab.memtrace.outputs import utf8_safe

        self._roots[trace.id] = self._tracer.start_span(
            utf8_safe(f"memtrace {redact_text(trace.name, self.redact)}"),
            attributes={"openinference.span.kind": "CHAIN", "memtrace.trace.id": trace.id},
        )

    def on_op_start(self, trace: Trace, op_id: str, parent: str | None, name: str) -> None:  # noqa: D102
        up = self._spans.get((trace.id, parent)) if parent else None
        ctx = self._ot.set_span_in_context(up if up is not None else self._roots[trace.id])
        from zjulab.memtrace.outputs import utf8_safe

        self._spans[(trace.id, op_id)] = self._tracer.start_span(utf8_safe(name), context=ctx)

    def on_op_end(self, trace: Trace, op: Operation) -> None:  # noqa: D102
        from opentelemetry.trace import Status, StatusCode

        span = self._spans.pop((trace.id, op.id), None)
        if span is None:
            return
        span.set_attributes(span_attributes(trace, op, redact=self.redact, max_chars=self.max_chars))
        if op.error:
            span.set_status(Status(StatusCode.ERROR, redact_text(op.error, self.redact)))
        span.end()

    def on_trace_end(self, trace: Trace) -> None:  # noqa: D102
        root = self._roots.pop(trace.id, None)
        if root is not None:
            root.set_attributes(root_attributes(trace, redact=self.redact, max_chars=self.max_chars))
            root.end()
