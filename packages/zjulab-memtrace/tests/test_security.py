"""A trace file is untrusted data: loading, attributing or drawing it never runs code."""

from __future__ import annotations

import builtins
import importlib
import json
import re
import sys
import textwrap
from html.parser import HTMLParser

import memtrace_registered as reg
import pytest

from zjulab.memtrace import TraceFileError, load_trace, replay, save_trace
from zjulab.memtrace.cli import main
from zjulab.memtrace.render import to_dot, to_html


def _evil_doc(handle_ref: str, command: str) -> dict:
    return {
        "schema": "zjulab.memtrace.trace",
        "version": 1,
        "id": "t1",
        "name": "evil",
        "final": "v2",
        "variables": [
            {"id": "v1", "name": "messages", "value": ["hello"], "producer": None},
            {"id": "v2", "name": "answer", "value": "wrong", "producer": "op1"},
        ],
        "operations": [
            {
                "id": "op1",
                "name": "shout",
                "inputs": ["v1"],
                "outputs": ["v2"],
                "handle_ref": handle_ref,
                "args": [{"const": command}],
                "kwargs": {"text": {"var": "v1"}},
                "arg_names": ["command"],
            }
        ],
    }


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """A module on sys.path whose import (or whose `run`) leaves a marker file."""
    marker = tmp_path / "marker"
    (tmp_path / "planted_mod.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib
            pathlib.Path({str(marker)!r} + ".import").write_text("imported")
            def run(*args, **kwargs):
                pathlib.Path({str(marker)!r} + ".call").write_text("called")
                return "x"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("planted_mod", None)
    yield marker
    sys.modules.pop("planted_mod", None)


REFS = [
    "os:system",
    "subprocess:check_call",
    "planted_mod:run",
    "builtins:eval",
    "memtrace_registered:not_an_operation",
    "memtrace_registered:shout.__globals__",
    "os.path:__class__",
]


@pytest.mark.parametrize("ref", REFS)
def test_loading_and_attributing_never_imports_or_calls(tmp_path, planted_module, monkeypatch, ref, capsys):
    path = tmp_path / "evil.json"
    cmd = f"touch {planted_module}.shell"
    path.write_text(json.dumps(_evil_doc(ref, cmd)))
    imported: list[str] = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def spy_import(name, *a, **k):
        imported.append(name)
        return real_import(name, *a, **k)

    def spy_import_module(name, *a, **k):
        imported.append(name)
        return real_import_module(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", spy_import)
    monkeypatch.setattr(importlib, "import_module", spy_import_module)
    trace = load_trace(path)
    assert trace.handles == {}
    pre = set(imported)
    # the CLI, the pictures and the attribution all run on the file without binding anything
    assert main(["attribute", str(path), "--gold", "hello", "--out", str(tmp_path / "a.json")]) == 0
    assert main(["show", str(path), "--out", str(tmp_path / "pic")]) == 0
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setattr(importlib, "import_module", real_import_module)
    mod = ref.partition(":")[0]
    assert mod not in pre and "planted_mod" not in imported
    for suffix in (".shell", ".import", ".call"):
        assert not (tmp_path / ("marker" + suffix)).exists()
    assert "not verifying" in capsys.readouterr().out


def test_trust_needs_an_allow_list(tmp_path, planted_module):
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(_evil_doc("planted_mod:run", "x")))
    with pytest.raises(TraceFileError, match="allow_modules"):
        load_trace(path, trust_handles=True)
    assert main(["attribute", str(path), "--gold", "x", "--trust-handles"]) == 2
    # a module outside the allow-list is not even imported
    t = load_trace(path, trust_handles=True, allow_modules=["memtrace_registered"])
    assert t.handles == {} and "planted_mod" not in sys.modules
    assert not (tmp_path / "marker.import").exists()


def test_allow_listed_module_binds_only_registered_operations(tmp_path, planted_module):
    # allow-listing a module imports it (explicit opt-in), yet a plain function is never bound
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(_evil_doc("planted_mod:run", "x")))
    t = load_trace(path, trust_handles=True, allow_modules=["planted_mod"])
    assert t.handles == {} and not (tmp_path / "marker.call").exists()
    path.write_text(json.dumps(_evil_doc("memtrace_registered:not_an_operation", "x")))
    assert load_trace(path, trust_handles=True, allow_modules=["memtrace_registered"]).handles == {}
    assert not [c for c in reg.CALLS if c.startswith("plain:")]


def test_registered_operation_is_rebound_with_opt_in(tmp_path):
    with reg.tracer.trace() as trace:
        reg.shout(reg.tracer.variable("hi there", "text"))
    path = save_trace(trace, tmp_path / "t.json")
    assert load_trace(path).handles == {}
    back = load_trace(path, trust_handles=True, allow_modules=["memtrace_registered"])
    op = trace.find_operations("shout")[0]
    assert back.handles[op.id] is reg.shout.__wrapped__
    src = trace.variables[op.inputs[0]]
    # a changed input re-runs the re-bound function
    (prod,) = [o for o in back.operations.values() if o.id == op.id]
    assert src.producer is None and prod.outputs
    res = replay(back, patches={op.id: {"text": "bye"}})
    assert res.final == "BYE"
    # a registered function renamed in the file (op name differs) is refused
    doc = json.loads(path.read_text())
    doc["operations"][0]["name"] = "other"
    path.write_text(json.dumps(doc))
    assert load_trace(path, trust_handles=True, allow_modules=["memtrace_registered"]).handles == {}


@pytest.mark.parametrize(
    "inputs,kwargs",
    [
        ([], {"text": {"var": "v1"}}),  # argument binds v1, inputs hide it
        (["v1"], {"text": {"const": "x"}}),  # inputs claim v1, arguments do not read it
        (["v1", "v2"], {"text": {"var": "v1"}}),
    ],
)
def test_inputs_disagreeing_with_args_are_refused(tmp_path, inputs, kwargs):
    doc = _evil_doc("x:y", "c")
    doc["operations"][0]["inputs"] = inputs
    doc["operations"][0]["kwargs"] = kwargs
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TraceFileError, match="disagree"):
        load_trace(path)


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


@pytest.mark.parametrize(
    "hostile",
    [
        'v1" URL="javascript:alert(1)',
        'v1\\" URL="javascript:alert(1)',
        "v1\\",
        'v1"];\n  x [URL="javascript:alert(1)"]; //',
        "v1\r\x1b[31m",
    ],
)
def test_every_string_from_a_file_is_escaped_in_dot_and_html(tmp_path, hostile):
    doc = _evil_doc("x:y", "c")
    doc["name"] = hostile
    doc["variables"][0]["id"] = hostile
    doc["variables"][0]["name"] = hostile
    doc["variables"][0]["value"] = [hostile]
    doc["operations"][0]["id"] = "op" + hostile
    doc["variables"][1]["producer"] = "op" + hostile
    doc["operations"][0]["name"] = hostile
    doc["operations"][0]["kind"] = hostile
    doc["operations"][0]["inputs"] = [hostile]
    doc["operations"][0]["kwargs"] = {"text": {"var": hostile}}
    doc["operations"][0]["prompt"] = hostile
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc))
    trace = load_trace(path)
    dot = to_dot(trace)
    outside = _QUOTED.sub("", dot)
    assert "URL" not in outside and "javascript" not in outside and "\x1b" not in dot and "\r" not in dot
    # each statement line keeps the DOT statement shape once strings are removed
    assert dot.startswith("// written by zjulab-memtrace\ndigraph ")
    for line in outside.splitlines()[4:-1]:
        assert re.fullmatch(r"\s*(\[[^\[\]]*\];|-> ;|;)", line), line
    page = to_html(trace)
    seen: list[tuple[str, str]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            seen.extend((tag, name) for name, _ in attrs)

    Collect().feed(page)
    names = {n for _, n in seen}
    assert "url" not in names and "href" not in names and not any(n.startswith("on") for n in names)
    assert "script" not in {t for t, _ in seen}


def test_terminal_output_strips_control_sequences(tmp_path, capsys):
    doc = _evil_doc("x:y", "c")
    doc["operations"][0]["name"] = "shout\x1b]0;owned\x07\x1b[2J"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    assert main(["attribute", str(path), "--gold", "hello", "--out", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
