"""A hostile trace, attribution or LoCoMo file gets a typed error, and every message is clean."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from zjulab.common.errors import ZjulabError
from zjulab.memtrace import (
    EvidenceJudge,
    Gold,
    ReplayError,
    TraceFileError,
    Tracer,
    attribute,
    replay,
    save_trace,
)
from zjulab.memtrace.cli import main
from zjulab.memtrace.locomo import load_locomo
from zjulab.memtrace.render import to_dot, to_html
from zjulab.memtrace.store import trace_from_dict

KEY = "sk-proj-Q7mZr2Lx9KpW4vNt8YbC3dHs"
EMAIL = "ann.lee@example.org"
GOLD = Gold("Milo", ("Ann: my cat is Milo",))


def _doc(tmp_path):
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",), prompt="Extract the facts.")
    def extract(messages):
        return [m for m in messages if "cat" not in m]

    @tracer.operation("update", outputs=("store",))
    def update(store, facts):
        store.extend(facts)

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, store, temperature=0.0):
        return next((m.split()[-1] for m in store if "cat" in m), "I don't know")

    with tracer.trace("session") as trace:
        store: list[str] = []
        update(store, extract(["Ann: my cat is Milo", "Ann: I live in Oslo"]))
        generate("What is Ann's cat called?", store)
    return json.loads(save_trace(trace, tmp_path / "good.json").read_text())


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


HOSTILE = [None, 7, 1e308, 10**30, "", "v0", "op1", [], [[1]], {"a": 1}]


def _use(trace):
    """Everything a user does with a loaded trace."""
    attribute(trace, GOLD, EvidenceJudge())
    to_dot(trace)
    to_html(trace)
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    from zjulab.memtrace.otel import export_otel

    export_otel(trace, tracer_provider=TracerProvider())
    ops = list(trace.operations)
    if ops:
        replay(trace, {ops[0]: ["Ann: my cat is Milo"]}, handles={o: (lambda *a, **k: ["x"]) for o in ops})


def test_every_field_of_a_trace_file_with_a_wrong_type_is_a_typed_error(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    good = _doc(tmp_path)
    untyped = []
    for path in _paths(good):
        for bad in HOSTILE:
            doc = copy.deepcopy(good)
            cur = doc
            for k in path[:-1]:
                cur = cur[k]
            cur[path[-1]] = bad
            try:
                trace = trace_from_dict(doc, source="t.json")
                _use(trace)
            except ZjulabError:
                continue
            except Exception as exc:
                untyped.append((path, bad, type(exc).__name__, str(exc)[:80]))
    assert not untyped, untyped[:5]


def test_a_wrong_field_is_named_in_the_message(tmp_path):
    doc = _doc(tmp_path)
    doc["operations"][1]["meta"]["mutates"] = {doc["operations"][1]["outputs"][-1]: 5}
    with pytest.raises(TraceFileError, match=r"t.json: field operations\.1\.meta\.mutates\..*string"):
        trace_from_dict(doc, source="t.json")
    doc = _doc(tmp_path)
    doc["operations"][0]["parent"] = doc["operations"][0]["id"]
    with pytest.raises(TraceFileError, match="unknown parent"):
        trace_from_dict(doc, source="t.json")
    doc = _doc(tmp_path)
    doc["operations"][1]["meta"]["mutates"] = {doc["variables"][0]["id"]: "0"}
    with pytest.raises(TraceFileError, match="not one of its outputs"):
        trace_from_dict(doc, source="t.json")


@pytest.mark.parametrize(
    "content",
    [
        '{"decisive": [{"op_id": "op1", "bogus": 1}]}',
        '{"verdicts": {"op1": 5}}',
        "[1]",
        '{"rounds": 5}',
        '{"decisive": [{"op_id": "op1", "name": "x", "label": "x#0", "mode": {"a": 1}}]}',
    ],
)
def test_a_hostile_attribution_file_is_a_typed_error(tmp_path, content, capsys):
    _doc(tmp_path)
    bad = tmp_path / "a.json"
    bad.write_text(content)
    assert main(["show", str(tmp_path / "good.json"), "--attribution", str(bad)]) == 2
    assert "not an attribution document" in capsys.readouterr().err


def test_an_attribution_file_named_but_missing_is_an_error(tmp_path, capsys):
    _doc(tmp_path)
    rc = main(["show", str(tmp_path / "good.json"), "--attribution", str(tmp_path / "nope.json")])
    assert rc == 2 and "no such file" in capsys.readouterr().err
    assert not (tmp_path / "good.html").exists()


def test_cli_error_messages_are_redacted_and_free_of_control_sequences(tmp_path, capsys):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"schema": f"\x1b]0;x\x07{KEY} {EMAIL}", "version": 1}))
    assert main(["attribute", str(bad), "--gold", "x"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and KEY not in err and EMAIL not in err
    assert "\x1b" not in err and "\x07" not in err


def test_cli_log_lines_are_redacted(tmp_path, capsys, caplog):
    doc = _doc(tmp_path)
    doc["operations"][0]["handle_ref"] = f"nope{KEY}"  # logged as "not a public module:qualname"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    caplog.set_level(logging.WARNING)
    assert main(["attribute", str(path), "--gold", "x", "--trust-handles", "--allow-module", "nope"]) == 0
    out = capsys.readouterr()
    assert "not re-bound" in caplog.text
    assert KEY not in caplog.text + out.err + out.out


def test_a_replay_error_does_not_quote_secrets():
    tracer = Tracer()

    @tracer.operation("fetch", outputs=("docs",))
    def fetch(query):
        return [query]

    @tracer.operation("answer", outputs=("answer",))
    def answer(docs):
        return docs[0]

    with tracer.trace() as trace:
        answer(fetch("q"))

    def broken(docs):
        raise RuntimeError(f"401 for key {KEY}")

    with pytest.raises(ReplayError, match="raised during replay") as info:
        replay(trace, {trace.find_operations("fetch")[0].id: ["x"]}, handles={"op2": broken, "op3": broken})
    assert KEY not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        '[{"conversation": 5}]',
        '[{"conversation": {}, "qa": [{"answer": "x"}]}]',
        '[{"conversation": {}, "qa": [{"question": "q", "answer": "x", "category": "multi"}]}]',
        '[{"conversation": {}, "qa": [5]}]',
    ],
)
def test_a_malformed_locomo_file_is_a_typed_error(tmp_path, content):
    p = tmp_path / "locomo10.json"
    p.write_text(content)
    with pytest.raises(TraceFileError, match=r"locomo10.json: conversation 0 is not LoCoMo-shaped"):
        load_locomo(p)


@pytest.mark.parametrize("depth", [150, 100_000])
def test_a_deeply_nested_file_is_a_typed_error_everywhere(tmp_path, depth):
    # past the JSON reader's own limit (100 000) or only past what redaction and rendering can walk
    good = _doc(tmp_path)
    text = json.dumps(good).replace('"I don\'t know"', "[" * depth + "]" * depth, 1)
    assert text != json.dumps(good)
    trace_file = tmp_path / "deep.json"
    trace_file.write_text(text)
    for argv in (["attribute", str(trace_file), "--gold", "Milo"], ["show", str(trace_file)]):
        assert main(argv) == 2  # a one-line error, never a RecursionError traceback
    with pytest.raises(TraceFileError, match=r"deep\.json.*nested"):
        from zjulab.memtrace import load_trace

        load_trace(trace_file)
    att = tmp_path / "a.json"
    att.write_text('{"schema": "zjulab.memtrace.attribution", "decisive": ' + "[" * depth + "]" * depth + "}")
    trace_file.write_text(json.dumps(good))
    assert main(["show", str(trace_file), "--attribution", str(att)]) == 2
    lo = tmp_path / "locomo10.json"
    lo.write_text("[" * depth + "]" * depth)
    with pytest.raises(TraceFileError, match=r"locomo10\.json.*nested"):
        load_locomo(lo)
    assert not list(tmp_path.glob("deep.html")) and not list(tmp_path.glob("deep.attribution.json"))


def test_lone_surrogates_never_fail_an_output(tmp_path, capsys):
    # a string decoded with surrogateescape (a file name, subprocess bytes) cannot be UTF-8;
    # JSON files can hold such strings as \udcff escapes
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if "cat" not in m]

    with tracer.trace("run \udcff") as trace:
        extract(["Ann: my cat is Milo", "log line \udcff\ud800 from a pipe"])
    path = save_trace(trace, tmp_path / "t.json")
    from zjulab.memtrace import load_trace
    from zjulab.memtrace.render import write_picture

    back = load_trace(path)
    facts = back.variables[back.operations["op1"].outputs[0]]
    assert facts.value == ["log line \ufffd\ufffd from a pipe"] and not facts.serializable
    assert len(write_picture(trace, tmp_path / "pic")) == 2
    hostile = tmp_path / "h.json"
    hostile.write_text(path.read_text().replace("\ufffd", "\\udcff"))
    assert "\\udcff" in hostile.read_text()
    assert main(["show", str(hostile)]) == 0
    assert main(["attribute", str(hostile), "--gold", "Milo", "--evidence", "Ann: my cat is Milo"]) == 0
    json.loads((tmp_path / "h.attribution.json").read_text(encoding="utf-8"))
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zjulab.memtrace.otel import export_otel

    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    export_otel(load_trace(hostile), tracer_provider=provider)
    spans = mem.get_finished_spans()
    assert len(spans) == 2
    for span in spans:  # what an OTLP exporter encodes must be valid UTF-8
        span.name.encode("utf-8")
        for value in span.attributes.values():
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, str):
                    v.encode("utf-8")


def test_graph_errors_from_a_file_name_the_file(tmp_path):
    good = _doc(tmp_path)
    two = copy.deepcopy(good)
    first = two["operations"][0]
    two["operations"][1]["outputs"] = [*two["operations"][1]["outputs"], first["outputs"][0]]
    dup = copy.deepcopy(good)
    dup["variables"].append(dict(dup["variables"][0]))
    for doc, kind in ((two, TraceFileError), (dup, TraceFileError)):
        with pytest.raises(kind, match=r"^bad\.json: "):
            trace_from_dict(doc, source="bad.json")
    loop = copy.deepcopy(good)
    op = loop["operations"][0]
    op["outputs"] = [op["inputs"][0]]
    from zjulab.memtrace.errors import CycleError

    with pytest.raises(CycleError, match=r"^bad\.json: "):
        trace_from_dict(loop, source="bad.json")
