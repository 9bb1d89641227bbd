"""Leakage and protocol cases found by using the library on realistic files: times written in
other ISO forms, gold response text in the generation prompt, turns recommending several items,
and the authors' BLEU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zjulab.crs.dialogue import Attribute, Behaviour, Dialogue, Item, Utterance, canonical_time
from zjulab.crs.errors import DataFormatError
from zjulab.crs.loaders import UNeedCorpus, load_behaviours, load_dialogues
from zjulab.crs.recommendation import AttributeMatchRanker
from zjulab.crs.samples import RecommendationExample, build_recommendation

# --- times compared as times, not as text -------------------------------------------------------


def _dialogue(turn_time: str) -> Dialogue:
    return Dialogue(
        sid="d1",
        domain="beauty",
        user_id="u1",
        ds="20240110",
        utterances=[
            Utterance(
                1, "user", "a dry toner", "user_need", [Attribute("skin", "dry", 2, 5)], time=turn_time
            ),
            Utterance(2, "assistant", "here is a link", "system_recommend", [], ["t"], ["t@1"], [["a", "t"]]),
        ],
    )


ITEMS = {"a": Item("a", [("skin", "oily")]), "t": Item("t", [("skin", "oily")])}
# one hour AFTER the turn, written with a space while the turn is written with a "T"
LATER = [Behaviour("s", "u1", "t", "2024-01-10 11:00:00")] + [
    Behaviour("s", f"v{i}", "t", "2024-01-10 11:00:00") for i in range(5)
]


@pytest.mark.parametrize(
    "turn, later",
    [
        ("2024-01-10T10:00:00", "2024-01-10 11:00:00"),  # "T" separator on the turn
        ("2024-01-10 10:00:00", " 2024-01-10 11:00:00"),  # leading space on the behaviour
        ("2024-01-10 10:00:00", "2024-01-10"),  # a date alone on the turn's day may be after it
    ],
)
def test_times_in_other_iso_forms_never_leak_later_behaviour(turn: str, later: str):
    future = [Behaviour(b.seller_id, b.user_id, b.item_id, later) for b in LATER]
    (ex,) = build_recommendation([_dialogue(turn)], UNeedCorpus(items=ITEMS, behaviours=future))
    ranker = AttributeMatchRanker(ITEMS, future)
    assert ex.history == [] and ex.time == "2024-01-10 10:00:00"
    assert ranker.count_before("t", ex.time) == 0
    assert ranker.count_before("t", "2024-01-10T10:00:00") == 0  # a hand-made example's time too


def test_canonical_time_orders_as_time():
    assert canonical_time("2024-01-10T10:00:00") == "2024-01-10 10:00:00"
    assert canonical_time(" 2024-01-10 10:00:00.5 ") == "2024-01-10 10:00:00.500000"
    assert canonical_time("") == ""
    assert canonical_time("2024-01-10 10:00:00") < canonical_time("2024-01-10T10:00:00.25")
    with pytest.raises(DataFormatError, match="2024/01/10"):
        canonical_time("2024/01/10 10:00:00")
    with pytest.raises(DataFormatError, match="time-zone"):
        canonical_time("2024-01-10T10:00:00+08:00")


def test_utterance_time_that_is_no_date_time_is_a_typed_error(uneed_dir: Path, tmp_path: Path):
    data = json.loads((uneed_dir / "test_dialogue.json").read_text(encoding="utf-8"))
    data[0]["dialogue"][3]["time"] = "2022/10/15 22:19:25"
    bad = tmp_path / "test_dialogue.json"
    bad.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataFormatError) as exc:
        load_dialogues(bad)
    msg = str(exc.value)
    assert "test_dialogue.json" in msg and "seq_no 4" in msg and "2022/10/15 22:19:25" in msg


def test_behaviour_time_with_offset_is_a_typed_error(tmp_path: Path):
    f = tmp_path / "user_action.txt"
    f.write_text(
        "seller_id_encrypt,user_id_encrypt,item_id_encrypt,actime,action_id\n"
        "1,2,3,2022-09-24 17:17:31,0\n1,2,3,2022-09-24T17:34:43+08:00,0\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFormatError, match=r"user_action.txt:3: actime"):
        load_behaviours(f)


def test_hand_made_example_with_unparsable_time_is_a_typed_error():
    ex = RecommendationExample([], [], ["a", "t"], ["t"], time="yesterday")
    with pytest.raises(DataFormatError, match="yesterday"):
        AttributeMatchRanker(ITEMS, LATER).scores([ex])


# --- no gold response text in the generation prompt -------------------------------------------


def test_generation_prompt_holds_no_word_of_the_gold_response_only(uneed_dir: Path):
    from zjulab.crs.generation import generation_prompt
    from zjulab.crs.loaders import load_uneed_dir
    from zjulab.crs.samples import build_generation

    corpus = load_uneed_dir(uneed_dir)
    checked = 0
    for ds in corpus.dialogues.values():
        for e in build_generation(ds, corpus):
            prompt = generation_prompt(e)
            seen = "\n".join(t for _, t in e.context) + " ".join(v for _, v in e.needs)
            for _, v in e.ask_values:
                if v not in seen:  # a value only the gold response says
                    assert v not in prompt
                    checked += 1
    assert checked >= 2  # 偏油 and 偏干 of the real test dialogue


# --- a turn recommending several items ---------------------------------------------------------


def _two_item_turn() -> Dialogue:
    list_x = ["x", "n1", "n2", "n3"]
    list_y = ["m1", "y", "m2", "m3"]
    return Dialogue(
        sid="d2",
        domain="beauty",
        user_id="u1",
        ds="20240110",
        utterances=[
            Utterance(1, "user", "a dry toner", "user_need", [Attribute("skin", "dry", 2, 5)]),
            Utterance(
                2,
                "assistant",
                "here is a link",
                "system_recommend",
                [],
                ["x", "y"],
                ["x@1", "y@1"],
                [list_x, list_y],
            ),
        ],
    )


def test_each_recommended_item_is_one_example_with_its_own_candidate_list():
    ex_x, ex_y = build_recommendation([_two_item_turn()])
    assert ex_x.targets == ["x"] and ex_x.candidates == ["x", "n1", "n2", "n3"]
    assert ex_y.targets == ["y"] and ex_y.candidates == ["m1", "y", "m2", "m3"]
    # hand-worked: y matches the need, everything else ties at 0; x is pessimistically 4th
    items = {"y": Item("y", [("skin", "dry")])}
    m = AttributeMatchRanker(items, [], popularity_weight=0.0, history_weight=0.0).evaluate([ex_x, ex_y])
    assert m["mrr@10"] == pytest.approx((1 / 4 + 1) / 2)
    assert m["hit@10"] == 1.0 and m["all_tied"] == 1


def test_the_turns_other_item_is_no_candidate_under_the_category_rule():
    items = {k: Item(k, [("一级类目", "1"), ("skin", "oily")]) for k in ("x", "y", "o1", "o2")}
    ex_x, ex_y = build_recommendation([_two_item_turn()], UNeedCorpus(items=items), candidates="category")
    assert sorted(ex_x.candidates) == ["o1", "o2", "x"] and ex_x.targets == ["x"]
    assert sorted(ex_y.candidates) == ["o1", "o2", "y"] and ex_y.targets == ["y"]


# --- the authors' BLEU ----------------------------------------------------------------------------


def test_sentence_bleu_is_the_authors_definition_hand_worked():
    import math

    from zjulab.crs.metrics import bleu, sentence_bleu

    hyps, refs = ["a b c d", "a"], ["a b x d", "a b"]
    # pair 1: p1 = 3/4, p2 = 1/3 (ab of ab, bc, cd), BP = 1; pair 2: p1 = 1, BP = exp(1 - 2/1),
    # no bigram at all -> 0. Order n alone, then the mean over pairs.
    assert sentence_bleu(hyps, refs, 1) == pytest.approx((0.75 + math.exp(-1)) / 2)
    assert sentence_bleu(hyps, refs, 2) == pytest.approx((1 / 3 + 0.0) / 2)
    # not sacrebleu's corpus BLEU-2: sqrt(pooled p1 * pooled p2) * corpus BP (5 vs 6 tokens)
    assert bleu(hyps, refs, 2) == pytest.approx(math.sqrt(4 / 5 * 1 / 3) * math.exp(1 - 6 / 5))
    assert sentence_bleu([""], ["a"], 1) == 0.0


def test_generation_table_reports_the_authors_bleu_next_to_corpus_bleu():
    from zjulab.crs.samples import GenerationExample
    from zjulab.crs.task_scores import generation_scores

    exs = [GenerationExample([], [], [], None, r) for r in ("补水面霜好用", "推荐这款")]
    out = generation_scores(exs, ["补水面膜", "推荐这款"])
    # 补水面膜 vs 补水面霜好用: p1 = 3/4, BP = exp(1 - 6/4); 推荐这款: exact, 1.0
    import math

    assert out["bleu1"] == pytest.approx((0.75 * math.exp(1 - 6 / 4) + 1.0) / 2)
    # bigrams: 补水 水面 of 3 -> 2/3 * BP; exact pair 1.0
    assert out["bleu2"] == pytest.approx((2 / 3 * math.exp(1 - 6 / 4) + 1.0) / 2)
    assert out["corpus_bleu1"] != pytest.approx(out["bleu1"])


# --- recommended items and their candidate lists are validated -----------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rec_item_id", "577681663455", "'rec_item_id' must be a list of item ids"),  # was 12 one-digit ids
        ("rec_item_id", [{"a": 1}], "'rec_item_id' must be a list of item ids"),
        ("rec_item_candidates", [["1", "2"]] * 3, "3 candidate lists for 1 recommended items"),
        ("rec_item_candidates", [["1", "2"]], "'577681663455' is not in its candidate list"),
    ],
)
def test_recommendation_fields_are_validated(
    uneed_dir: Path, tmp_path: Path, field: str, value, message: str
):
    data = json.loads((uneed_dir / "test_dialogue.json").read_text(encoding="utf-8"))
    data[0]["dialogue"][6][field] = value
    bad = tmp_path / "test_dialogue.json"
    bad.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataFormatError, match="seq_no 7") as exc:
        load_dialogues(bad)
    assert message in str(exc.value) and "test_dialogue.json" in str(exc.value)
