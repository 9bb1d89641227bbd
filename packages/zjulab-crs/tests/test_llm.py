import json

import pytest

from zjulab.crs.llm import LLMElicitor, LLMResponder, LLMUnderstanding, locate_spans
from zjulab.crs.samples import ElicitationExample, GenerationExample, UnderstandingExample


def test_locate_spans_uses_each_occurrence_once():
    assert locate_spans(
        "Large or large?", [("screen", "large"), ("battery", "LARGE"), ("x", ""), ("y", "tiny")]
    ) == [
        ("screen", 0, 5),
        ("battery", 9, 14),
    ]


def test_llm_understanding_parses_structured_answers(scripted_chat):
    ex = [
        UnderstandingExample(
            "I want a dry skin toner",
            [("skin", 9, 12), ("product", 18, 23)],
            [("skin", "dry"), ("product", "toner")],
        ),
        UnderstandingExample("for men", [("group", 4, 7)], [("group", "men")]),
    ]
    chat = scripted_chat(
        [
            'Sure! ```json\n{"attributes": [{"key": "skin", "value": "dry"}, {"key": "product", "value": "toner"}]}\n```',
            "I cannot tell",  # unparsable, then re-asked
            '{"attributes": [{"key": "group", "value": "women"}]}',
        ]
    )
    llm = LLMUnderstanding(chat, max_retries=1).fit(ex)
    scores = llm.evaluate(ex)
    # 2 of 3 predicted pairs right, 2 of 3 gold pairs found; spans located in the text
    assert scores["pair_precision"] == pytest.approx(2 / 3) and scores["pair_recall"] == pytest.approx(2 / 3)
    # "women" is not in "for men", so it gets no span: span P = 2/2, R = 2/3, F1 = 0.8
    assert scores["precision"] == 1.0 and scores["f1"] == pytest.approx(0.8)
    assert "Attribute names: group, product, skin." in chat.calls[0][1]["content"]
    assert "could not be used" in chat.calls[2][-1]["content"]  # the re-ask carries the error
    assert llm.failures == 0


def test_llm_failures_count_as_empty_predictions(scripted_chat):
    ex = [UnderstandingExample("for men", [("group", 4, 7)], [("group", "men")])]
    llm = LLMUnderstanding(scripted_chat(default="no idea"), max_retries=0)
    assert llm.predict(ex) == [[]]
    assert llm.failures == 1


def test_llm_elicitor_keeps_known_attribute_names(scripted_chat):
    train = [
        ElicitationExample([], [], ["skin type"], "beauty"),
        ElicitationExample([], [], ["effect"], "beauty"),
    ]
    test = [ElicitationExample([("user", "a toner")], [("product", "toner")], ["skin type"], "beauty")]
    chat = scripted_chat([json.dumps({"attributes": ["Skin Type", "colour", "skin type"]})])
    llm = LLMElicitor(chat).fit(train)
    assert llm.predict(test) == [["skin type"]]
    assert "Choose from: effect, skin type." in chat.calls[0][1]["content"]


def test_llm_responder_and_shared_metrics(scripted_chat):
    ex = [
        GenerationExample(
            [("user", "a toner")], [("product", "toner")], ["skin type"], None, "what is your skin type?"
        )
    ]
    chat = scripted_chat(['{"response": "what is your skin type?"}'])
    scores = LLMResponder(chat).evaluate(ex)
    assert scores["bleu1"] == pytest.approx(1.0) and scores["bleu2"] == pytest.approx(1.0)
    assert chat.sampling[0]["temperature"] == 0.0
