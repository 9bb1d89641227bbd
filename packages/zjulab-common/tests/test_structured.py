from dataclasses import dataclass, field
from typing import Literal

import pydantic
import pytest

from zjulab.common import (
    ConfigError,
    StructuredOutputError,
    generate_structured,
    parse_json,
    parse_structured,
    schema_prompt,
)
from zjulab.common.structured import extract_json, repair_json
from zjulab.common.testing import ScriptedChatModel


@dataclass
class Fact:
    subject: str
    score: float
    tags: list[str] = field(default_factory=list)
    kind: Literal["fact", "event"] = "fact"


BROKEN = [
    # (raw model answer, parsed value)
    ('{"a": 1}', {"a": 1}),
    ('Sure! Here it is:\n```json\n{"a": 1, "b": [1, 2]}\n```\nHope that helps.', {"a": 1, "b": [1, 2]}),
    ("```\n[1, 2, 3]\n```", [1, 2, 3]),
    ('The answer is {"a": {"b": "c}"}} and nothing else.', {"a": {"b": "c}"}}),
    ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),
    ("{'a': 'it''s', 'b': True, 'c': None}", None),  # ambiguous quotes: must not crash, see below
    ("{'name': 'Paris', 'ok': True, 'none': None}", {"name": "Paris", "ok": True, "none": None}),
    ('{name: "x", count: 3}', {"name": "x", "count": 3}),
    ('{"a": 1, // comment\n "b": 2 /* block */}', {"a": 1, "b": 2}),
    ('{"items": ["one", "two", "thr', {"items": ["one", "two", "thr"]}),
    ('{"a": {"b": [1, 2', {"a": {"b": [1, 2]}}),
    ('{"a": 1, "b":', {"a": 1}),
    ('{"a": 1, "b', {"a": 1}),
    ('{"url": "http://x.org/a//b", "t": "say \\"hi\\""}', {"url": "http://x.org/a//b", "t": 'say "hi"'}),
]


@pytest.mark.parametrize(("raw", "expected"), [b for b in BROKEN if b[1] is not None])
def test_parse_json_repairs(raw, expected):
    assert parse_json(raw) == expected


def test_ambiguous_quotes_do_not_crash():
    try:
        parse_json(BROKEN[5][0])
    except StructuredOutputError as exc:
        assert exc.raw == BROKEN[5][0]


def test_no_json_at_all():
    with pytest.raises(StructuredOutputError, match="no valid JSON") as info:
        parse_json("I cannot answer that.")
    assert info.value.raw == "I cannot answer that."


def test_extract_prefers_fenced_block():
    assert extract_json('x {"no": 1} ```json\n{"yes": 2}\n```') == '{"yes": 2}'


def test_repair_is_idempotent_on_valid_json():
    s = '{"a": [1, 2], "b": "c, ]"}'
    assert repair_json(s) == s


def test_dataclass_with_wrong_key_spelling_and_coercion():
    out = parse_structured('{"Subject": "Ann", "SCORE": "0.5", "tags": "solo", "kind": "EVENT"}', Fact)
    assert out == Fact(subject="Ann", score=0.5, tags=["solo"], kind="event")


def test_dataclass_missing_key_names_it():
    with pytest.raises(StructuredOutputError, match=r"missing required key\(s\) \['score'\]"):
        parse_structured('{"subject": "Ann", "points": 3}', Fact)


def test_literal_violation():
    with pytest.raises(StructuredOutputError, match=r"\$.kind: 'opinion' is not one of"):
        parse_structured('{"subject": "a", "score": 1, "kind": "opinion"}', Fact)


def test_bare_list_for_one_field_dataclass():
    @dataclass
    class Ids:
        ids: list[int]

    assert parse_structured("[1, 2, 3]", Ids) == Ids([1, 2, 3])
    with pytest.raises(StructuredOutputError, match="expected an integer"):
        parse_structured("[1.5]", Ids)


def test_typing_forms():
    assert parse_structured('{"a": ["x"], "b": []}', dict[str, list[str]]) == {"a": ["x"], "b": []}
    assert parse_structured('[true, "no", 1]', list[bool]) == [True, False, True]


def test_pydantic_schema():
    class Verdict(pydantic.BaseModel):
        winner: int
        reason: str

    v = parse_structured('```json\n{"winner": 2, "reason": "shorter"}\n```', Verdict)
    assert (v.winner, v.reason) == (2, "shorter")
    assert "JSON schema" in schema_prompt(Verdict)


def test_schema_prompt_dataclass_shape():
    assert schema_prompt(Fact) == (
        'Answer with a single JSON value of this shape (no prose): {"subject": "<string>", '
        '"score": "<number>", "tags": ["<string>"], "kind": "\\"fact\\" | \\"event\\""}'
    )


def test_generate_structured_reasks_with_error():
    chat = ScriptedChatModel(["not json", '{"subject": "s", "score": 2}', '{"subject": "t", "score": 1}'])
    out = generate_structured(
        chat, [[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]], Fact
    )
    # first batch: q1 -> "not json" (fails), q2 -> s/2; retry batch: q1 -> t/1
    assert out == [Fact("t", 1.0), Fact("s", 2.0)]
    retry = chat.calls[2]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == "not json"
    assert "could not be used" in retry[2]["content"]


def test_generate_structured_on_error_modes():
    q = [[{"role": "user", "content": "q"}]]
    with pytest.raises(StructuredOutputError) as info:
        generate_structured(ScriptedChatModel(default="nope"), q, Fact, max_retries=1)
    assert info.value.raw == "nope" and info.value.attempts == 2
    assert generate_structured(ScriptedChatModel(default="nope"), q, Fact, on_error="none") == [None]
    err = generate_structured(ScriptedChatModel(default="nope"), q, Fact, max_retries=0, on_error="error")[0]
    assert isinstance(err, StructuredOutputError) and err.raw == "nope"
    with pytest.raises(ConfigError):
        generate_structured(ScriptedChatModel(), q, Fact, max_retries=-1)
