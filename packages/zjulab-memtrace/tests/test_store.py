import json
import logging

import pytest
from memtrace_toy import MILO, build, record, run

from zjulab.memtrace import (
    CycleError,
    DanglingVariableError,
    Redactor,
    TraceFileError,
    Tracer,
    TraceSchemaError,
    load_trace,
    replay,
    save_trace,
)
from zjulab.memtrace.store import SCHEMA_VERSION, trace_to_dict


def test_json_round_trip_is_lossless(tmp_path):
    _, trace, _ = record(drops={0: [MILO]})
    path = save_trace(trace, tmp_path / "t.json")
    back = load_trace(path)
    assert trace_to_dict(back) == trace_to_dict(trace)
    assert back.edges() == trace.edges()
    assert back.final == trace.final
    assert [back.operation_label(o) for o in back.topological_operations()] == [
        trace.operation_label(o) for o in trace.topological_operations()
    ]
    doc = json.loads(path.read_text())
    assert doc["schema"] == "zjulab.memtrace.trace" and doc["version"] == SCHEMA_VERSION


def test_reloaded_trace_replays_with_reattached_handles(tmp_path):
    tracer = Tracer()
    steps = build(tracer, drops={0: [MILO]})
    with tracer.trace() as trace:
        run(steps)
    back = load_trace(save_trace(trace, tmp_path / "t.json"), handles=steps)  # by operation name
    ext0 = back.find_operations("extract")[0]
    res = replay(back, {ext0.id: [MILO]})
    assert res.final == "I adopted a cat named Milo"


def test_non_serialisable_values_are_stored_by_repr(tmp_path, caplog):
    class Blob:
        def __repr__(self):
            return "Blob()"

    tracer = Tracer()

    @tracer.operation("wrap")
    def wrap(xs):
        return {"blob": Blob(), "xs": xs}

    with tracer.trace() as t:
        wrap([1])
    with caplog.at_level(logging.WARNING):
        path = save_trace(t, tmp_path / "t.json", redact=None)
    assert "not JSON-serialisable" in caplog.text
    back = load_trace(path)
    var = back.variables[back.final]
    assert var.value == {"__repr__": "{'blob': Blob(), 'xs': [1]}"}
    assert var.serializable is False
    # redaction (the default) reaches inside: only the object itself becomes its repr
    back = load_trace(save_trace(t, tmp_path / "r.json"))
    var = back.variables[back.final]
    assert var.value == {"blob": {"__repr__": "Blob()"}, "xs": [1]} and var.serializable is False


def test_newer_schema_is_refused(tmp_path):
    _, trace, _ = record()
    doc = trace_to_dict(trace)
    doc["version"] = SCHEMA_VERSION + 1
    p = tmp_path / "t.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(TraceSchemaError, match="newer"):
        load_trace(p)
    doc["schema"] = "something.else"
    p.write_text(json.dumps(doc))
    with pytest.raises(TraceSchemaError, match=r"something\.else"):
        load_trace(p)


def test_dangling_and_cyclic_files_are_refused(tmp_path):
    _, trace, _ = record()
    doc = trace_to_dict(trace)
    p = tmp_path / "t.json"
    bad = json.loads(json.dumps(doc))
    bad["operations"][0]["inputs"] = ["v404"]
    p.write_text(json.dumps(bad))
    with pytest.raises(TraceFileError, match="disagree"):  # inputs no argument binds
        load_trace(p)
    for slot in [*bad["operations"][0]["args"], *bad["operations"][0]["kwargs"].values()]:
        if "var" in slot:
            slot["var"] = "v404"
    p.write_text(json.dumps(bad))
    with pytest.raises(DanglingVariableError, match="v404"):
        load_trace(p)
    cyc = json.loads(json.dumps(doc))
    first, last = cyc["operations"][0], cyc["operations"][-1]
    # make the first operation read the final answer: answer -> extract -> ... -> answer
    first["inputs"].append(last["outputs"][0])
    first["kwargs"]["later"] = {"var": last["outputs"][0]}
    p.write_text(json.dumps(cyc))
    with pytest.raises(CycleError, match="cycle"):
        load_trace(p)


def test_bad_files(tmp_path):
    with pytest.raises(TraceFileError, match="no such file"):
        load_trace(tmp_path / "missing.json")
    p = tmp_path / "t.json"
    p.write_text('{"schema": ')
    with pytest.raises(TraceFileError, match=r"t.json:1:\d+: invalid JSON"):
        load_trace(p)
    p.write_text(
        '{"schema": "zjulab.memtrace.trace", "version": 1, "variables": [{"id": "v0"}], "operations": []}'
    )
    with pytest.raises(TraceFileError, match=r"field variables\.0\.name: Field required"):
        load_trace(p)


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    _, trace, _ = record()
    p = save_trace(trace, tmp_path / "t.json")
    before = p.read_bytes()

    def explode(value):
        raise RuntimeError("redactor crashed")

    with pytest.raises(RuntimeError, match="redactor crashed"):
        save_trace(trace, p, redact=explode)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["t.json"]


def test_redaction_is_applied_before_writing(tmp_path):
    tracer = Tracer()

    @tracer.operation("extract")
    def extract(messages, prompt="Contact admin@example.com"):
        return [m.upper() for m in messages]

    with tracer.trace() as t:
        extract(
            ["mail me at jo.doe@mail.org or +1 (555) 123-4567", "key sk-abcdefghijklmnop123"],
            prompt="Contact admin@example.com",
        )
    text = save_trace(t, tmp_path / "t.json", redact=Redactor()).read_text()
    for secret in (
        "jo.doe@mail.org",
        "JO.DOE@MAIL.ORG",
        "123-4567",
        "sk-abcdefghijklmnop123",
        "SK-ABCDEFGHIJKLMNOP123",
        "admin@example.com",
    ):
        assert secret not in text
    assert "[REDACTED:email]" in text and "[REDACTED:phone]" in text and "[REDACTED:api_key]" in text
    # the in-memory trace is untouched (replay needs it)
    assert "jo.doe@mail.org" in t.variables[t.sources()[0]].value[0]


def test_redactor_hand_worked():
    r = Redactor()
    assert r("write to a@b.io") == "write to [REDACTED:email]"
    assert r({"password": "hunter2", "note": ["call 555-123-4567"]}) == {
        "password": "[REDACTED:key]",
        "note": ["call [REDACTED:phone]"],
    }
    assert r(("Bearer abcdefghijklmnop",)) == ("[REDACTED:bearer]",)
    assert r("version 1.2.3 on 2023") == "version 1.2.3 on 2023"
    assert r(42) == 42
