import enum
from dataclasses import dataclass, field
from typing import Literal

import pydantic
import pytest
from typing_extensions import TypedDict

from zjulab.common import (
    ChatResult,
    ConfigError,
    OpenAIChatModel,
    RemoteModelError,
    StructuredOutputError,
    generate_structured,
    parse_json,
    parse_structured,
    schema_prompt,
)
from zjulab.common.structured import extract_json, json_schema, response_format
from zjulab.common.testing import ChatServer, ScriptedChatModel


@dataclass
class Place:
    city: str
    country: str


@dataclass
class Fact:
    subject: str
    score: float
    tags: list[str] = field(default_factory=list)
    kind: Literal["fact", "event"] = "fact"


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Row(TypedDict):
    name: str
    age: int


class Verdict(pydantic.BaseModel):
    winner: int
    reason: str


def q(text):
    return [{"role": "user", "content": text}]


EXTRACTED = [
    ('{"a": 1}', {"a": 1}),
    ('Sure! Here it is:\n```json\n{"a": 1, "b": [1, 2]}\n```\nHope that helps.', {"a": 1, "b": [1, 2]}),
    ("```\n[1, 2, 3]\n```", [1, 2, 3]),
    ('The answer is {"a": {"b": "c}"}} and nothing else.', {"a": {"b": "c}"}}),
    ('{"url": "http://x.org/a//b", "t": "say \\"hi\\""}', {"url": "http://x.org/a//b", "t": 'say "hi"'}),
]


@pytest.mark.parametrize(("raw", "expected"), EXTRACTED)
def test_parse_json_extracts_without_changing(raw, expected):
    assert parse_json(raw) == expected


BROKEN = [
    # answers that used to be "repaired" into something; every one must now fail
    ('{"city": "Paris", "country": "Fr', "incomplete JSON"),
    ('{"items": ["one", "two", "thr', "incomplete JSON"),
    ('{"a": {"b": [1, 2', "incomplete JSON"),
    ('{"a": 1, "b":', "incomplete JSON"),
    ('{"a": 1, "b": [1, 2,],}', "invalid JSON"),
    ("{'name': 'Paris', 'ok': True}", "invalid JSON"),
    ('{name: "x", count: 3}', "invalid JSON"),
    ("I cannot answer that.", "no JSON value"),
]


@pytest.mark.parametrize(("raw", "why"), BROKEN)
def test_broken_json_is_reported_not_repaired(raw, why):
    with pytest.raises(StructuredOutputError, match=why) as info:
        parse_json(raw)
    assert info.value.raw == raw


def test_truncated_object_never_becomes_a_partial_instance():
    with pytest.raises(StructuredOutputError, match="incomplete JSON") as info:
        parse_structured('{"city": "Paris", "country": "Fr', Place)
    assert info.value.raw == '{"city": "Paris", "country": "Fr'


@pytest.mark.parametrize(
    ("raw", "schema"),
    [
        # a complete value nested in a cut-off answer is a fragment of it, not the answer
        ('{"tags": ["a", "b"], "note": "unfin', list[str]),
        ('{"answer": {"city": "Paris", "country": "France"}, "confidence": 0.', Place),
        ('Here you go: [{"city": "Paris", "country": "France"}, {"city": "Ber', Place),
    ],
)
def test_complete_value_nested_in_a_cut_off_answer_is_not_taken(raw, schema):
    with pytest.raises(StructuredOutputError, match="incomplete JSON"):
        parse_structured(raw, schema)


def test_cut_off_answer_with_a_nested_value_is_reasked():
    cut = '{"tags": ["a", "b"], "note": "unfin'
    model = ScriptedChatModel([cut, '["a", "b", "c"]'])
    assert generate_structured(model, [q("tags?")], list[str]) == [["a", "b", "c"]]
    assert len(model.calls) == 2


@pytest.mark.parametrize(
    "raw",
    [
        'Pick one of {x] and say: {"pick": 1}',
        'I will answer [as asked, with {"pick": 1}',  # an unclosed bracket in prose, then the answer
        '<think>options (a) [b or {c</think>\n{"pick": 1}',
    ],
)
def test_prose_with_stray_brackets_before_the_answer_still_parses(raw):
    assert parse_json(raw) == {"pick": 1}


def test_extract_prefers_fenced_block():
    assert extract_json('x {"no": 1} ```json\n{"yes": 2}\n```') == '{"yes": 2}'


def test_dataclass_is_validated_strictly():
    assert parse_structured('{"subject": "Ann", "score": 1, "tags": ["a"]}', Fact) == Fact("Ann", 1.0, ["a"])
    with pytest.raises(StructuredOutputError, match=r"\$.score: Input should be a valid number"):
        parse_structured('{"subject": "Ann", "score": "0.5"}', Fact)
    with pytest.raises(StructuredOutputError, match=r"\$.tags: Input should be a valid array"):
        parse_structured('{"subject": "Ann", "score": 1, "tags": "solo"}', Fact)


def test_missing_field_is_named():
    with pytest.raises(StructuredOutputError, match=r"\$.score: Field required"):
        parse_structured('{"subject": "Ann", "points": 3}', Fact)


def test_literal_and_enum_are_exact():
    with pytest.raises(
        StructuredOutputError, match=r"\$.kind: Input should be 'fact' or 'event' \(got \"EVENT\"\)"
    ):
        parse_structured('{"subject": "a", "score": 1, "kind": "EVENT"}', Fact)
    assert parse_structured('"blue"', Color) is Color.blue
    with pytest.raises(StructuredOutputError, match="Input should be 'red' or 'blue'"):
        parse_structured('"green"', Color)


def test_typeddict_and_typing_forms():
    assert parse_structured('{"name": "Ann", "age": 31}', Row) == {"name": "Ann", "age": 31}
    with pytest.raises(StructuredOutputError, match=r"\$.age: Input should be a valid integer"):
        parse_structured('{"name": "Ann", "age": 31.5}', Row)
    assert parse_structured('{"a": ["x"], "b": []}', dict[str, list[str]]) == {"a": ["x"], "b": []}
    with pytest.raises(StructuredOutputError, match="valid boolean"):
        parse_structured('[true, "no"]', list[bool])
    assert parse_structured("[1, 2]", tuple[int, int]) == (1, 2)


def test_pydantic_model_and_lax_mode():
    v = parse_structured('```json\n{"winner": 2, "reason": "shorter"}\n```', Verdict)
    assert (v.winner, v.reason) == (2, "shorter")
    with pytest.raises(StructuredOutputError):
        parse_structured('{"winner": "2", "reason": "x"}', Verdict)
    assert parse_structured('{"winner": "2", "reason": "x"}', Verdict, strict=False).winner == 2


def test_schema_prompt_is_pydantics_json_schema():
    prompt = schema_prompt(Place)
    assert prompt == (
        "Answer with a single JSON value, no prose, that validates against this JSON schema: "
        '{"properties":{"city":{"title":"City","type":"string"},"country":{"title":"Country","type":"string"}},'
        '"required":["city","country"],"title":"Place","type":"object"}'
    )
    assert json_schema(Fact)["properties"]["kind"]["enum"] == ["fact", "event"]
    assert response_format(Place) == {
        "type": "json_schema",
        "json_schema": {"name": "Place", "schema": json_schema(Place)},
    }


def test_not_a_schema_is_a_config_error():
    import typing

    with pytest.raises(ConfigError, match="not a type pydantic can validate"):
        generate_structured(ScriptedChatModel(default="{}"), [q("x")], typing.TypedDict("T", {"a": int}))


def test_generate_structured_reasks_with_error():
    chat = ScriptedChatModel(["not json", '{"subject": "s", "score": 2}', '{"subject": "t", "score": 1}'])
    out = generate_structured(chat, [q("q1"), q("q2")], Fact)
    assert out == [Fact("t", 1.0), Fact("s", 2.0)]
    retry = chat.calls[2]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"]
    assert retry[1]["content"] == "not json"
    assert "could not be used: no JSON value" in retry[2]["content"]


def test_cut_off_answer_is_reasked_with_a_hint():
    chat = ScriptedChatModel(
        [
            ChatResult('{"city": "Paris", "country": "Fr', finish_reason="length"),
            '{"city": "Paris", "country": "France"}',
        ]
    )
    assert generate_structured(chat, [q("where?")], Place) == [Place("Paris", "France")]
    assert "cut off" in chat.calls[1][-1]["content"]


def test_cut_off_answer_that_stays_cut_off_is_an_error():
    cut = ChatResult('{"city": "Paris", "country": "Fr', finish_reason="length")
    out = generate_structured(
        ScriptedChatModel([cut, cut]), [q("where?")], Place, max_retries=1, on_error="error"
    )
    assert isinstance(out[0], StructuredOutputError) and "cut off at the token limit" in str(out[0])
    assert out[0].raw == cut.text and out[0].attempts == 2


def test_generate_structured_on_error_modes():
    with pytest.raises(StructuredOutputError) as info:
        generate_structured(ScriptedChatModel(default="nope"), [q("q")], Fact, max_retries=1)
    assert info.value.raw == "nope" and info.value.attempts == 2
    assert generate_structured(ScriptedChatModel(default="nope"), [q("q")], Fact, on_error="none") == [None]
    err = generate_structured(
        ScriptedChatModel(default="nope"), [q("q")], Fact, max_retries=0, on_error="error"
    )[0]
    assert isinstance(err, StructuredOutputError) and err.raw == "nope"
    with pytest.raises(ConfigError):
        generate_structured(ScriptedChatModel(), [q("q")], Fact, max_retries=-1)
    with pytest.raises(ConfigError):
        generate_structured(ScriptedChatModel(), [q("q")], Fact, on_error="ignore")  # type: ignore[arg-type]


def test_raise_keeps_the_items_that_parsed():
    chat = ScriptedChatModel(['{"subject": "s", "score": 2}', "nope"], default="nope")
    with pytest.raises(StructuredOutputError) as info:
        generate_structured(chat, [q("a"), q("b")], Fact, max_retries=0)
    assert info.value.results[0] == Fact("s", 2.0) and info.value.failed == [1]


class _Short:
    """A model that drops the last answer: a contract violation."""

    model_id = "short"

    def generate(self, conversations, **sampling):
        return ['{"subject": "s", "score": 1}'] * (len(conversations) - 1)


def test_fewer_answers_than_conversations_is_an_error():
    with pytest.raises(StructuredOutputError, match="returned 1 answer"):
        generate_structured(_Short(), [q("a"), q("b")], Fact, on_error="none")


def test_a_conversation_that_got_no_answer_is_not_reasked():
    chat = ScriptedChatModel([ChatResult(error=RemoteModelError("HTTP 400")), '{"subject": "s", "score": 1}'])
    out = generate_structured(chat, [q("a"), q("b")], Fact, on_error="error")
    assert isinstance(out[0], RemoteModelError) and out[1] == Fact("s", 1.0)
    assert len(chat.calls) == 2


def test_response_format_is_sent_when_the_server_supports_it():
    chat = ScriptedChatModel(default='{"city": "Paris", "country": "France"}')
    with ChatServer(chat, models=["m"]) as srv:
        constrained = OpenAIChatModel("m", base_url=srv.url, json_schema=True)
        assert generate_structured(constrained, [q("where?")], Place) == [Place("Paris", "France")]
        assert srv.requests[0]["response_format"] == response_format(Place)
        plain = OpenAIChatModel("m", base_url=srv.url)
        generate_structured(plain, [q("where?")], Place)
        assert "response_format" not in srv.requests[1]
    generate_structured(chat, [q("x")], Place, constrained=True)
    assert chat.sampling[-1]["response_format"] == response_format(Place)


@pytest.mark.parametrize(
    ("raw", "schema", "match"),
    [
        # each used to be coerced into a value the model never wrote
        ('{"Subject": "Ann", "SCORE": 1}', Fact, r"\$.subject: Field required"),
        ("[1, 2, 3]", Place, "Input should be an object"),
        ('["yes", "no"]', list[bool], "valid boolean"),
        ('{"subject": "a", "score": true}', Fact, "valid number"),
        ('{"city": 1, "country": "France"}', Place, "valid string"),
    ],
)
def test_no_lenient_coercion(raw, schema, match):
    with pytest.raises(StructuredOutputError, match=match):
        parse_structured(raw, schema)
