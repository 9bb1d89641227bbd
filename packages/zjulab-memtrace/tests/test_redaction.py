"""Redaction is on by default at every sink, and detect-secrets finds nothing in the artefacts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from zjulab.memtrace import EvidenceJudge, Gold, Redactor, Tracer, attribute, save_trace
from zjulab.memtrace.cli import main
from zjulab.memtrace.render import write_picture

# realistic-looking but fake credentials of each kind the redactor must catch
OPENAI = "sk-proj-Q7mZr2Lx9KpW4vNt8YbC3dHs"
GITHUB_FG = "github_pat_11ABCDE2F0gHiJkLmNoPqR_s3TuVwXyZaBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdEFGH"
GITHUB_CLASSIC = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngAbCdEf12"
AWS_ID = "AKIAZ7QX4LMNB2VCRT5E"
AWS_SECRET = "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"
GOOGLE = "AIzaSyB7xQ2mN9vL4kR8tW1pZ5cJ3hF6gD0sYeU"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MjQyIiwibmFtZSI6IkFubiJ9.kX8v2QpL9mZr4TnW7yBc1HdJ5sFgA0eUiOq3VxYtRwE"
URL_TOKEN = "tok_9f8e7d6c5b4a3921"
PASSWORD = "Tr0ub4dor&3xyz"
EMAIL = "ann.lee@example.org"
PHONE = "+1 415 555 0134"
BASIC = "YW5uOlRyMHViNGRvciYzeHl6"
DB_PASSWORD = "pg-Q7mZr2Lx9Kp"
SECRETS = [
    BASIC,
    DB_PASSWORD,
    OPENAI,
    GITHUB_FG,
    GITHUB_CLASSIC,
    AWS_ID,
    AWS_SECRET,
    GOOGLE,
    JWT,
    URL_TOKEN,
    PASSWORD,
    EMAIL,
    PHONE,
]


@dataclasses.dataclass
class Credentials:
    user: str
    note: str


class Client:
    def __repr__(self) -> str:
        return f"Client(api_key={OPENAI!r})"


def _run():
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages, client):
        return [*messages, Credentials("ann", f"aws {AWS_ID} {AWS_SECRET}"), {f"google {GOOGLE}"}]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, facts, client):
        raise RuntimeError(f"401 from https://api.example.com/v1?token={URL_TOKEN} with key {OPENAI}")

    messages = [
        f"Ann: my token is {GITHUB_FG}, old one {GITHUB_CLASSIC}",
        f"Ann: session {JWT}",
        f"Ann: password: {PASSWORD} mail {EMAIL} call {PHONE}",
        "Ann: order #123456789 shipped on 2023-05-07, arriving 12.05.2023",
        f"Ann: Authorization: Basic {BASIC} for postgres://ann:{DB_PASSWORD}@db.internal/shop",
    ]
    with tracer.trace() as trace, pytest.raises(RuntimeError):
        generate("What is Ann's order number?", extract(messages, Client()), Client())
    return trace


def test_every_artefact_is_clean_by_default(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zjulab.memtrace.otel import export_otel

    trace = _run()
    assert any(OPENAI in (op.error or "") for op in trace.operations.values())  # the run handled them
    att = attribute(trace, Gold("123456789"), EvidenceJudge())
    files = [save_trace(trace, tmp_path / "t.json"), *write_picture(trace, tmp_path / "t", att)]
    assert main(["show", str(files[0]), "--out", str(tmp_path / "cli")]) == 0
    files += [tmp_path / "cli.html", tmp_path / "cli.dot"]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    export_otel(trace, tracer_provider=provider, attribution=att)
    spans = tmp_path / "spans.json"
    spans.write_text(
        json.dumps(
            [
                {"name": s.name, "attributes": dict(s.attributes), "status": s.status.description}
                for s in exporter.get_finished_spans()
            ],
            default=list,
        )
    )
    files.append(spans)
    attribution = tmp_path / "t.attribution.json"
    attribution.write_text(json.dumps(att.to_dict()))
    summary = tmp_path / "summary.txt"
    summary.write_text(att.summary())
    assert "401" in summary.read_text()  # the crash is reported, its key is not
    files += [attribution, summary]
    for f in files:
        text = f.read_text()
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, (f.name, leaked)
        # what is no secret survives: dates and order numbers are not phone numbers
        if f.suffix in (".json", ".html") and f.name != "t.attribution.json":  # DOT labels are cut
            assert "123456789" in text and "2023-05-07" in text, f.name
    with default_settings():
        found = SecretsCollection()
        found.scan_files(*[str(f) for f in files])
    assert not list(found), [(name, s.type) for name, s in found]
    # the in-memory trace keeps the originals for replay
    assert GITHUB_FG in json.dumps(trace.variables[trace.sources()[0]].value)


@pytest.mark.parametrize(
    "text,kept",
    [
        ("shipped on 2023-05-07", True),
        ("due 12.05.2023", True),
        ("order #123456789", True),
        ("order number 20230507", True),
        ("version 1.2.3 in 2023", True),
        ("10 000 people", True),
        ("call 555-123-4567", False),
        ("call +44 20 7946 0958", False),
        ("call (415) 555-0134", False),
    ],
)
def test_phone_numbers_without_false_positives(text, kept):
    assert (Redactor()(text) == text) is kept


def test_walks_dataclasses_sets_and_reprs():
    r = Redactor()
    out = r([Credentials("ann", f"key {OPENAI}"), {f"{EMAIL}"}, Client()])
    assert OPENAI not in json.dumps(out) and EMAIL not in json.dumps(out)
    assert out[0]["__dataclass__"] == "Credentials" and out[0]["user"] == "ann"


def test_redaction_can_be_turned_off(tmp_path):
    trace = _run()
    text = save_trace(trace, tmp_path / "raw.json", redact=None).read_text()
    assert GITHUB_FG in text


def test_keys_trace_names_model_ids_and_live_spans_are_redacted(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zjulab.memtrace.otel import LiveExporter, export_otel
    from zjulab.memtrace.render import to_dot, to_html

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = Tracer(listeners=[LiveExporter(provider)])

    class Model:
        model_id = f"https://api.example.com/v1?api_key={OPENAI}"

    @tracer.operation("update", outputs=("store",))
    def update(store, fact, model):
        return {**store, EMAIL: [fact]}  # a memory store keyed by the user's e-mail address

    with tracer.trace(f"memory of {EMAIL}", user=EMAIL) as trace:
        update({}, "likes cats", Model())
    live = json.dumps(
        [{"n": s.name, "a": dict(s.attributes)} for s in exporter.get_finished_spans()], default=list
    )
    exporter.clear()
    export_otel(trace, tracer_provider=provider)
    after = json.dumps(
        [{"n": s.name, "a": dict(s.attributes)} for s in exporter.get_finished_spans()], default=list
    )
    sinks = {
        "trace": save_trace(trace, tmp_path / "t.json").read_text(),
        "html": to_html(trace),
        "dot": to_dot(trace),
        "live spans": live,
        "spans": after,
    }
    for name, text in sinks.items():
        assert EMAIL not in text and OPENAI not in text, name
    assert "likes cats" in sinks["trace"]


def test_a_secret_after_an_escape_in_a_repr_is_redacted():
    r = Redactor()
    err = repr(RuntimeError(f"bad key:\n{OPENAI}\tmail\t{EMAIL}"))
    out = r.text(err)
    assert OPENAI not in out and EMAIL not in out
    assert out == "RuntimeError('bad key:\\n[REDACTED:api_key]\\tmail\\t[REDACTED:email]')"
    # the escapes themselves are kept, and a key spanning escaped line breaks goes whole
    key = "-----BEGIN RSA PRIVATE KEY-----\\nMIIEabc\\n-----END RSA PRIVATE KEY----- ok"
    assert r.text(key) == "[REDACTED:private_key] ok"


@pytest.mark.parametrize(
    "text,secret",
    [
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ('{"Authorization": "Token 9f8e7d6c5b4a39281706"}', "9f8e7d6c5b4a39281706"),
        ("postgres://app:p4ssw0rd-Q9@db.internal:5432/prod", "p4ssw0rd-Q9"),
        ("redis://:s3cr3t-pw-77@localhost:6379/0", "s3cr3t-pw-77"),
    ],
)
def test_credentials_in_headers_and_urls_are_redacted(text, secret):
    out = Redactor()(text)
    assert secret not in out and "[REDACTED:" in out


@pytest.mark.parametrize(
    "text",
    [
        "fixed in commit 9b07edb3a1c2d4e5f60718293a4b5c6d7e8f9012",  # a git SHA is no AWS key
        "a basic understanding of Python",
        "see https://docs.python.org/3/library/re.html",
        "https://example.com/a:b@c",
    ],
)
def test_hashes_and_plain_urls_are_kept(text):
    assert Redactor()(text) == text


def test_a_long_api_key_is_removed_whole_under_its_own_name():
    out = Redactor()("agent sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd end")
    assert out == "agent [REDACTED:api_key] end"  # not "sk-proj-" left before an AWS label
