"""Live OpenTelemetry spans, and an OTLP/HTTP round trip to a receiver on localhost."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zjulab.memtrace import Tracer
from zjulab.memtrace.otel import LiveExporter


class Usage:
    def __init__(self):
        self.prompt_tokens = 0
        self.completion_tokens = 0


class Model:
    model_id = "Qwen/Qwen3-0.6B"
    provider = "openai"

    def __init__(self):
        self.usage = Usage()

    def reply(self, text):
        self.usage.prompt_tokens += 7
        self.usage.completion_tokens += 2
        return text.split()[-1]


def _pipeline(tracer, seen):
    @tracer.operation("retrieve", outputs=("hits",), params=("k",))
    def retrieve(store, question, k=2):
        seen.append(len(exporter_spans()))  # spans of earlier ops are already finished
        return store[:k]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, hits, model, temperature=0.0, prompt="Answer briefly."):
        return model.reply(hits[0])

    @tracer.operation("pipeline")
    def pipeline(store, question, model):
        return generate(question, retrieve(store, question), model)

    return pipeline


_EXPORTER = InMemorySpanExporter()


def exporter_spans():
    return _EXPORTER.get_finished_spans()


def test_spans_start_and_end_as_operations_run():
    _EXPORTER.clear()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    seen: list[int] = []
    tracer = Tracer(listeners=[LiveExporter(provider)])
    pipeline = _pipeline(tracer, seen)
    with tracer.trace("rag"):
        pipeline(["Ann: my cat is Milo", "Bob: hi"], "cat?", Model())
        assert [s.name for s in exporter_spans()] == [
            "retrieve",
            "generate",
            "pipeline",
        ]  # before the trace ends
    spans = {s.name: s for s in exporter_spans()}
    root = spans["memtrace rag"]
    assert spans["pipeline"].parent.span_id == root.context.span_id
    assert spans["generate"].parent.span_id == spans["pipeline"].context.span_id
    gen = spans["generate"].attributes
    assert gen["gen_ai.operation.name"] == "chat" and gen["openinference.span.kind"] == "LLM"
    assert gen["gen_ai.request.model"] == "Qwen/Qwen3-0.6B" and gen["gen_ai.provider.name"] == "openai"
    assert (gen["gen_ai.usage.input_tokens"], gen["gen_ai.usage.output_tokens"]) == (7, 2)
    assert gen["llm.token_count.total"] == 9 and gen["gen_ai.request.temperature"] == 0.0
    ret = spans["retrieve"].attributes
    assert ret["openinference.span.kind"] == "RETRIEVER"
    assert ret["retrieval.documents.1.document.content"] == "Bob: hi"
    assert json.loads(root.attributes["output.value"]) == "Milo"
    assert root.attributes["output.mime_type"] == "application/json"


class _Receiver(BaseHTTPRequestHandler):
    spans: ClassVar[list[dict]] = []

    def do_POST(self):  # OTLP/HTTP protobuf, decoded with the official classes
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    attrs = {}
                    for kv in sp.attributes:
                        v = kv.value
                        attrs[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
                    type(self).spans.append(
                        {
                            "name": sp.name,
                            "attributes": {
                                k: a for k, a in attrs.items() if isinstance(a, (str, int, float, bool))
                            },
                        }
                    )
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):  # the receiver's read-back API
        data = json.dumps(type(self).spans).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_otlp_round_trip_to_a_local_receiver():
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    import urllib.request

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    try:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    except OSError as exc:  # pragma: no cover - no loopback sockets here
        pytest.skip(f"cannot start a receiver on localhost: {exc}")
    _Receiver.spans = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
        tracer = Tracer(listeners=[LiveExporter(provider)])
        pipeline = _pipeline(tracer, [])
        with tracer.trace("rag"):
            pipeline(["Ann: my cat is Milo, mail ann@example.org", "Bob: hi"], "cat?", Model())
        assert provider.force_flush(10_000)
        with urllib.request.urlopen(f"{url}/spans", timeout=10) as resp:
            got = {s["name"]: s["attributes"] for s in json.loads(resp.read())}
        provider.shutdown()
    finally:
        server.shutdown()
    assert set(got) == {"memtrace rag", "pipeline", "retrieve", "generate"}
    assert got["generate"]["gen_ai.operation.name"] == "chat"
    assert got["generate"]["gen_ai.usage.input_tokens"] == 7
    assert got["retrieve"]["openinference.span.kind"] == "RETRIEVER"
    assert "ann@example.org" not in json.dumps(got)  # redacted before it left the process
