import json

import pytest
from memtrace_toy import MILO, record

from zjulab.memtrace import EvidenceJudge, Gold, Redactor, attribute
from zjulab.memtrace.render import layered_layout, to_dot, to_html, write_picture

GOLD = Gold("Milo", (MILO,), "What is the name of Alice's cat?")


def test_otel_spans_carry_genai_and_openinference_attributes():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zjulab.memtrace.otel import export_otel

    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, EvidenceJudge())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    export_otel(trace, tracer_provider=provider, attribution=att, redact=Redactor())
    spans = exporter.get_finished_spans()
    assert len(spans) == 1 + len(trace.operations)
    root = next(s for s in spans if s.parent is None)
    assert root.name == "memtrace toy"
    children = [s for s in spans if s.parent is not None]
    assert all(s.parent.span_id == root.context.span_id for s in children)
    assert all(s.context.trace_id == root.context.trace_id for s in children)
    by_name = {}
    for s in children:
        by_name.setdefault(s.name, []).append(s)
    gen = by_name["generate"][0].attributes
    assert gen["gen_ai.operation.name"] == "chat"
    assert gen["openinference.span.kind"] == "LLM"
    assert json.loads(gen["gen_ai.system_instructions"]) == [{"type": "text", "content": "Answer briefly."}]
    assert gen["llm.input_messages.0.message.role"] == "system"
    assert gen["llm.output_messages.0.message.role"] == "assistant"
    assert "gen_ai.input.messages" in gen and "gen_ai.output.messages" in gen
    ret = by_name["retrieve"][0].attributes
    assert ret["openinference.span.kind"] == "RETRIEVER"
    assert "gen_ai.operation.name" not in ret  # the conventions have no retrieval operation name
    assert ret["retrieval.documents.0.document.content"]
    for s in spans:  # JSON where the mime type says so
        for key in ("input", "output"):
            if s.attributes.get(f"{key}.mime_type") == "application/json":
                json.loads(s.attributes[f"{key}.value"])
    assert ret["memtrace.operation.label"] == "retrieve#0"
    assert '"k": 2' in ret["memtrace.params"]
    ext0 = by_name["extract"][0].attributes
    assert ext0["memtrace.decisive"] is True and ext0["memtrace.failure_mode"] == "information_loss"
    assert set(ext0) >= {
        "memtrace.operation.id",
        "memtrace.inputs",
        "memtrace.outputs",
        "input.value",
        "output.value",
    }
    for s in children:  # recorded timing is kept
        op = trace.operations[s.attributes["memtrace.operation.id"]]
        assert (s.start_time, s.end_time) == (op.start_ns, op.end_ns)


def test_dot_highlights_decisive_error():
    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, EvidenceJudge())
    dot = to_dot(trace, att)
    ext0 = trace.find_operations("extract")[0].id
    line = next(x for x in dot.splitlines() if x.strip().startswith(f'"{ext0}" ['))
    assert "#d62728" in line and "extract#0" in line
    assert dot.count("->") == len(trace.edges())
    assert dot.startswith('// written by zjulab-memtrace\ndigraph "toy" {') and dot.rstrip().endswith("}")


def test_html_is_self_contained_and_marks_nodes(tmp_path):
    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, EvidenceJudge())
    page = to_html(trace, att, redact=Redactor())
    assert "<svg" in page and "</html>" in page
    assert "<script" not in page and "https://" not in page and "<link" not in page
    assert page.count('class="op decisive"') == 1
    assert page.count('class="var"') == len(trace.variables)
    assert "information_loss" in page
    files = write_picture(trace, tmp_path / "pic", att)
    assert sorted(f.name for f in files) == ["pic.dot", "pic.html"]


def test_layered_layout_columns_follow_longest_path():
    _, trace, _ = record()
    pos = layered_layout(trace)
    col = {trace.operation_label(o): pos[o][0] for o in trace.operations}
    assert col == {
        "extract#0": 1,
        "update#0": 3,
        "extract#1": 1,
        "update#1": 5,
        "retrieve#0": 7,
        "generate#0": 9,
    }
    assert len(set(pos.values())) == len(pos)  # no two nodes share a cell
