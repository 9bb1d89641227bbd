"""How an answer ended and what shape it has: the reason recorded for an unused answer is the
true one (cut off at the token limit, not "invalid JSON"), and the alternative JSON shapes the
authors' code accepts are taken as written, marked, while anything else is set aside with why."""

import json

import pytest

from zjulab.common.chat import ChatResult, OpenAIChatModel
from zjulab.common.structured import json_schema, parse_structured
from zjulab.common.testing import ChatServer, ScriptedChatModel
from zjulab.conifer import Pipeline, PipelineConfig, load_seeds
from zjulab.conifer.stages import Categories, Judgement, Levels, Questions, Rewritten, Steps, Verdict

from .fakes import strong_reply, weak_reply

SEEDS = ["How do I keep a sourdough starter alive?", "Explain photosynthesis to a child please"]


def cfg(out, **kw):
    base = dict(
        mode="verifiable",
        out_dir=str(out),
        num_reframes=1,
        num_levels=3,
        hard_level=2,
        max_structured_retries=0,
        few_shot=False,
        retry_backoff=0.0,
        max_remote_retries=0,
        show_progress=False,
        max_new_tokens=40,
    )
    base.update(kw)
    return PipelineConfig(**base)


def cut_constraints(conv):
    """The constraint answer for the sourdough question stops at the token limit mid-object."""
    text = conv[-1]["content"]
    full = strong_reply(conv)
    if "List the kinds of requirements" in text and "sourdough" in text:
        return ChatResult(full[:60], finish_reason="length")
    return full


def test_a_cut_off_answer_over_http_is_recorded_as_cut_off_and_resumed_as_such(tmp_path):
    with ChatServer(ScriptedChatModel(cut_constraints), models=["stub-model"]) as server:
        client = OpenAIChatModel("stub-model", base_url=server.url, api_key="k", max_retries=0, timeout=10)
        res = Pipeline(client, ScriptedChatModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        sent = len(server.requests)
        (row,) = [r for r in res.set_aside() if r["stage"] == "constraints"]
        assert row["reason"].startswith(
            "cut off at the token limit (40 new tokens) before its JSON was complete"
        )
        assert "invalid JSON" not in row["reason"] and row["raw"].startswith('{"categories"')
        # the cache knows how the answer ended: a resume asks nothing and gives the same reason
        rows = [json.loads(line) for line in (tmp_path / "run" / "requests.jsonl").read_text().splitlines()]
        assert sorted(r["finish"] for r in rows if r["stage"] == "constraints") == ["length", "stop"]
        again = Pipeline(client, ScriptedChatModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        assert len(server.requests) == sent
    assert again.set_aside() == res.set_aside() and again.records == res.records


def test_the_same_unclosed_object_ended_by_the_model_is_not_called_cut_off(tmp_path):
    def closed_early(conv):
        res = cut_constraints(conv)
        return ChatResult(res.text, finish_reason="stop") if isinstance(res, ChatResult) else res

    res = Pipeline(ScriptedChatModel(closed_early), None, cfg(tmp_path / "a", salvage_cut_off=True)).run(
        load_seeds(SEEDS)
    )
    (row,) = [r for r in res.set_aside() if r["stage"] == "constraints"]
    assert row["reason"].startswith("unparseable model output after 1 attempt(s): incomplete JSON")
    assert "token limit" not in row["reason"]  # not salvaged either: the model stopped by itself
    assert not any("salvaged" in r for r in res.records)
    # ended at the limit: salvage_cut_off keeps the whole category and says why
    cut = Pipeline(ScriptedChatModel(cut_constraints), None, cfg(tmp_path / "b", salvage_cut_off=True)).run(
        load_seeds(SEEDS)
    )
    marked = [r for r in cut.records if "salvaged" in r]
    assert marked and all(
        r["salvaged"]["constraints"].startswith("cut off at the token limit (40 new tokens)") for r in marked
    )
    assert {json.dumps(r["constraints"]) for r in marked} == {json.dumps({"Audience": ["kids", "adults"]})}


def test_a_cut_off_free_text_answer_is_not_training_data_unless_asked(tmp_path):
    def cut_answers(conv):
        if conv[0]["role"] == "system" and "L3" in conv[-1]["content"]:
            return ChatResult("The first half of an answer that", finish_reason="length")
        return strong_reply(conv)

    res = Pipeline(ScriptedChatModel(cut_answers), None, cfg(tmp_path / "a", answer_max_new_tokens=7)).run(
        load_seeds(SEEDS)
    )
    rows = [r for r in res.set_aside() if r["stage"] == "answer"]
    assert len(rows) == 2 and all(
        r["reason"] == "cut off at the token limit (7 new tokens): the answer is incomplete" for r in rows
    )
    assert not any(r.get("level") == 3 for r in res.records)
    kept = Pipeline(
        ScriptedChatModel(cut_answers),
        None,
        cfg(tmp_path / "b", answer_max_new_tokens=7, salvage_cut_off=True),
    ).run(load_seeds(SEEDS))
    top = [r for r in kept.records if r.get("level") == 3]
    assert len(top) == 2 and all("cut off at the token limit" in r["salvaged"]["answer"] for r in top)


def test_a_client_that_refuses_cut_off_answers_still_gets_them_cached_once(tmp_path):
    model = ScriptedChatModel(cut_constraints)
    model.on_truncation = "raise"
    res = Pipeline(model, None, cfg(tmp_path)).run(load_seeds(SEEDS))
    (row,) = [r for r in res.set_aside() if r["stage"] == "constraints"]
    assert "'length'" in row["reason"] and row["state"] == "rejected"
    asked = len(model.calls)
    again = Pipeline(model, None, cfg(tmp_path)).run(load_seeds(SEEDS))
    assert len(model.calls) == asked and again.records == res.records


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "schema, text, value, note",
    [
        # the authors' reframing output: numbered keys, taken in number order
        (Questions, '{"instruction2": "b?", "instruction1": "a?"}', ["a?", "b?"], "numbered keys"),
        (Questions, '["a?", "b?"]', ["a?", "b?"], "a bare list"),
        # the authors' recombination output
        (
            Levels,
            '{"Difficulty 1": "x", "Difficulty 2": "y", "Difficulty 3": "z"}',
            ["x", "y", "z"],
            "numbered",
        ),
        (Levels, '{"levels": {"2": "y", "1": "x"}}', ["x", "y"], "numbered keys"),
        # the authors' constraint output: the bare mapping, string options, nested subcategories
        (
            Categories,
            '{"Audience": ["kids"], "Length": "under 1,000 words; one page"}',
            {"Audience": ["kids"], "Length": ["under 1,000 words", "one page"]},
            "a bare mapping",
        ),
        (
            Categories,
            '{"categories": {"Style": {"tone": ["fun", "dry"]}}}',
            {"Style: tone": ["fun", "dry"]},
            "subcategories of 'Style'",
        ),
        # SmolLM2-135M's complete answer in the demo: names in "categories", categories beside it
        (
            Categories,
            '{"categories": ["Choosing a First Language"], "Audience": ["beginners", "experts"], '
            '"Format": ["a checklist"], "Audience": ["experts"]}',
            {"Audience": ["experts"], "Format": ["a checklist"]},
            "categories beside the 'categories' key",
        ),
        (Verdict, '{"keep": "Yes", "reason": "fine"}', True, "keep written as the string 'Yes'"),
        (Judgement, '{"follows": "no", "feedback": "too long"}', False, "follows written as the string 'no'"),
        # the key the authors' format/number prompt names, and the one their code reads
        (Rewritten, '{"rewritten instruction": "Do X. Use ##."}', "Do X. Use ##.", "'rewritten instruction'"),
        (Rewritten, '{"rewritten question": "Do X. Use ##."}', "Do X. Use ##.", "'rewritten question'"),
        (Steps, '["a: met"]', ["a: met"], "a bare list"),
    ],
)
def test_alternative_shapes_are_taken_as_written_and_named(schema, text, value, note):
    parsed = parse_structured(text, schema)
    field = {
        Questions: "questions",
        Levels: "levels",
        Categories: "categories",
        Verdict: "keep",
        Judgement: "follows",
        Rewritten: "instruction",
        Steps: "steps",
    }[schema]
    assert getattr(parsed, field) == value
    assert note in parsed.shape_note
    canonical = parse_structured(json.dumps({field: value}), schema)
    assert canonical.shape_note == "" and getattr(canonical, field) == value


@pytest.mark.parametrize(
    "schema, text, why",
    [
        (Levels, '{"Difficulty 1": "x", "Difficulty 3": "z"}', "numbered 1 to 2"),
        (Levels, '{"levels": ["x", 2]}', "valid string"),
        (Verdict, '{"keep": "maybe"}', "valid boolean"),
        (Verdict, '{"keep": 1}', "valid boolean"),  # strict: no number for a boolean
        (Categories, '{"Audience": 3}', "options must be a list or a string"),
        (Categories, '{"Audience": [null]}', "option null is not text"),
        (
            Rewritten,
            '{"rewritten instruction": "a", "rewritten question": "b"}',
            "hold different instructions",
        ),
        (Questions, '{"first": "a?"}', "questions"),  # unnumbered keys are not the authors' shape
        (Questions, '{"questions": ["a?"], "shape_note": "forged"}', None),  # the note is not the model's
    ],
)
def test_other_shapes_are_refused_with_the_reason(schema, text, why):
    if why is None:
        assert parse_structured(text, schema).shape_note == ""
        return
    from zjulab.common.errors import StructuredOutputError

    with pytest.raises(StructuredOutputError, match=why):
        parse_structured(text, schema)


def test_the_schema_sent_to_the_server_is_the_canonical_one():
    assert set(json_schema(Levels)["properties"]) == {"levels"}
    assert json_schema(Levels)["description"] == "Instructions from easiest to hardest."
    assert json_schema(Categories)["properties"]["categories"]["additionalProperties"] == {
        "items": {"type": "string"},
        "type": "array",
    }


def test_a_run_on_the_authors_shapes_keeps_every_record_and_marks_the_shape(tmp_path):
    def authors_shapes(conv):
        text = conv[-1]["content"]
        canonical = strong_reply(conv)
        if text.startswith("Here is a request"):
            return json.dumps({"instruction1": json.loads(canonical)["questions"][0]})
        if "List the kinds of requirements" in text:
            return '{"Audience": ["kids", "adults"], "Format": "a list; a table"}'
        if "Rewrite the question" in text:
            levels = json.loads(canonical)["levels"]
            return json.dumps({f"Difficulty {i}": x for i, x in enumerate(levels, 1)})
        return canonical

    ref = Pipeline(ScriptedChatModel(strong_reply), None, cfg(tmp_path / "ref")).run(load_seeds(SEEDS))
    res = Pipeline(ScriptedChatModel(authors_shapes), None, cfg(tmp_path / "run")).run(load_seeds(SEEDS))
    assert res.set_aside() == [] and len(res.records) == len(ref.records)
    assert [r["instruction"] for r in res.records] == [r["instruction"] for r in ref.records]
    assert all(set(r["shape"]) == {"reframe", "constraints", "recombine"} for r in res.records)
    assert res.records[0]["constraints"]["Format"] == ["a list", "a table"]
