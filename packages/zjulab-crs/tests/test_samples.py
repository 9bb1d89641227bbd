from zjulab.crs.dialogue import Attribute, Behaviour, Dialogue, Item, Utterance
from zjulab.crs.loaders import UNeedCorpus
from zjulab.crs.samples import (
    build_elicitation,
    build_evaluation,
    build_generation,
    build_recommendation,
    build_understanding,
    render_context,
)


def dialogue() -> Dialogue:
    return Dialogue(
        sid="d1",
        domain="美妆行业",
        user_id="u1",
        utterances=[
            Utterance(
                1,
                "user",
                "any dry toner?",
                "user_need",
                [Attribute("skin", "dry", 4, 7), Attribute("product", "toner", 8, 13)],
            ),
            Utterance(2, "assistant", "which effect?", "system_ask", [Attribute("effect", "", -1, -1)]),
            Utterance(3, "user", "hydrating", "user_answer", [Attribute("effect", "hydrating", 0, 9)]),
            Utterance(
                4,
                "assistant",
                "仅发送商品链接",
                "system_recommend",
                [],
                ["i2"],
                ["i2@1801"],
                None,
                time="2022-01-03 00:00:00",
            ),
            Utterance(5, "assistant", "it hydrates dry skin", "system_explain"),
        ],
        quality={5: 4.5},
    )


CORPUS = UNeedCorpus(
    items={
        "i1": Item("i1", [("一级类目", "1801"), ("skin", "oily")]),
        "i2": Item("i2", [("一级类目", "1801"), ("skin", "dry")]),
        "i3": Item("i3", [("一级类目", "1625")]),
    },
    behaviours=[
        Behaviour("s", "u1", "i1", "2022-01-02 00:00:00"),
        Behaviour("s", "u1", "i3", "2022-01-01 00:00:00"),
    ],
)


def test_understanding_skips_link_only_turns():
    ex = build_understanding([dialogue()])
    assert [e.seq_no for e in ex] == [1, 2, 3, 5]
    assert ex[0].spans == [("skin", 4, 7), ("product", 8, 13)] and ex[0].category == "beauty"
    assert ex[1].spans == [] and ex[1].pairs == [("effect", "")]
    assert ex[2].context == [("user", "any dry toner?"), ("assistant", "which effect?")]


def test_elicitation_targets_and_known_needs():
    (e,) = build_elicitation([dialogue()])
    assert e.targets == ["effect"]
    assert e.known == [("skin", "dry"), ("product", "toner")]
    assert e.context == [("user", "any dry toner?")]


def test_recommendation_candidates_fall_back_to_category_items():
    (r,) = build_recommendation([dialogue()], CORPUS)
    assert r.targets == ["i2"]
    assert r.candidates == ["i1", "i2"]  # the 1801 items (no candidate list in the record)
    assert r.history == ["i3", "i1"]  # oldest first
    assert r.time == "2022-01-03 00:00:00"
    assert r.needs == [("skin", "dry"), ("product", "toner"), ("effect", "hydrating")]


def test_generation_and_evaluation_samples():
    gens = build_generation([dialogue()], CORPUS)
    assert [(g.act, g.ask, g.response) for g in gens] == [
        ("system_ask", ["effect"], "which effect?"),
        ("system_explain", [], "it hydrates dry skin"),
    ]
    assert gens[1].item is not None and gens[1].item.item_id == "i2"
    (ev,) = build_evaluation([dialogue()])
    assert ev.score == 4.5 and ev.response == "it hydrates dry skin" and len(ev.context) == 4


def test_poorly_rated_responses_are_not_generation_targets():
    d = dialogue()
    d.quality[5] = 1.5
    assert [g.response for g in build_generation([d])] == ["which effect?"]


def test_render_context_keeps_last_turns():
    ctx = [("user", "a"), ("assistant", "b"), ("user", "c")]
    assert render_context(ctx, 2) == "assistant: b\nuser: c"
    assert render_context(ctx) == "user: a\nassistant: b\nuser: c"


def test_uneed_samples_build_task_samples(uneed_dir):
    from zjulab.crs.loaders import load_uneed_dir
    from zjulab.crs.samples import build_task_samples

    corpus = load_uneed_dir(uneed_dir)
    test = build_task_samples(corpus, "test")
    # 8 utterances, the link-only recommendation skipped
    assert len(test.understanding) == 7
    assert test.understanding[0].spans == [("性别", 0, 1), ("品类", 2, 5), ("品类", 5, 7), ("品类", 10, 12)]
    (el,) = test.elicitation
    assert el.targets == ["年龄", "肤质"] and el.known[0] == ("性别", "男")
    (rec,) = test.recommendation
    assert len(rec.candidates) == 20 and rec.targets == ["577681663455"] and rec.targets[0] in rec.candidates
    assert [g.act for g in test.generation] == ["system_ask", "system_explain"]
