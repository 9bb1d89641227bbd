"""Evaluation that cannot see the future, cannot lean on file order, cannot load half a model,
measures Chinese as Chinese and does not memorise its synthetic splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from zjulab.common.testing import tiny_encoder
from zjulab.crs.config import QualityConfig, TaggerConfig
from zjulab.crs.dialogue import Attribute, Behaviour, Dialogue, Item, Utterance
from zjulab.crs.errors import CheckpointError, DataFormatError, MetricInputError, MissingScoresError
from zjulab.crs.loaders import (
    UNeedCorpus,
    load_quality_scores,
    load_uneed_dir,
    save_quality_scores,
    save_uneed_dir,
)
from zjulab.crs.metrics import bleu, count_all_tied, distinct_n, rank_candidates, text_tokens
from zjulab.crs.quality import QualityRegressor
from zjulab.crs.recommendation import AttributeMatchRanker
from zjulab.crs.report import score_predictions
from zjulab.crs.samples import (
    RecommendationExample,
    build_elicitation,
    build_generation,
    build_recommendation,
    build_task_samples,
    split_overlap,
    task_examples,
)
from zjulab.crs.synthetic import SyntheticConfig, synthetic_corpus
from zjulab.crs.tagger import SpanTagger
from zjulab.crs.task_scores import evaluation_scores, generation_scores

# --- no information from after the dialogue ----------------------------------------------------


def _rec_dialogue() -> Dialogue:
    return Dialogue(
        sid="d1",
        domain="beauty",
        user_id="u1",
        ds="20240110",
        utterances=[
            Utterance(
                1,
                "user",
                "a dry toner",
                "user_need",
                [Attribute("skin", "dry", 2, 5)],
                time="2024-01-10 10:00:00",
            ),
            Utterance(
                2,
                "assistant",
                "here is a link",
                "system_recommend",
                [],
                ["t"],
                ["t@1"],
                [["a", "b", "t"]],
                time="2024-01-10 10:01:00",
            ),
        ],
    )


ITEMS = {
    "a": Item("a", [("skin", "oily")]),
    "b": Item("b", [("skin", "oily")]),
    "t": Item("t", [("skin", "oily")]),
}
PAST = [
    Behaviour("s", "u1", "a", "2024-01-09 09:00:00"),
    Behaviour("s", "u2", "b", "2024-01-09 09:00:00"),
    Behaviour("s", "u2", "b", "2024-01-09 10:00:00"),
]
# a purchase of the recommended item two days after the dialogue, by the user and by others
FUTURE = [Behaviour("s", "u1", "t", "2024-01-12 10:00:00")] + [
    Behaviour("s", f"v{i}", "t", "2024-01-12 11:00:00") for i in range(5)
]


def test_future_behaviour_changes_neither_history_nor_popularity_nor_rank():
    before = UNeedCorpus(items=ITEMS, behaviours=list(PAST))
    after = UNeedCorpus(items=ITEMS, behaviours=PAST + FUTURE)
    (ex0,) = build_recommendation([_rec_dialogue()], before)
    (ex1,) = build_recommendation([_rec_dialogue()], after)
    assert ex0.history == ex1.history == ["a"]
    assert ex1.time == "2024-01-10 10:01:00"
    r0 = AttributeMatchRanker(ITEMS, before.behaviours)
    r1 = AttributeMatchRanker(ITEMS, after.behaviours)
    assert r1.count_before("t", ex1.time) == 0
    assert r0.scores([ex0]) == r1.scores([ex1])
    assert r0.rank([ex0]) == r1.rank([ex1])
    assert r0.evaluate([ex0]) == r1.evaluate([ex1])
    # the same event one day before the turn does count
    early = Behaviour("s", "v9", "t", "2024-01-10 09:00:00")
    assert AttributeMatchRanker(ITEMS, [*PAST, early]).count_before("t", ex1.time) == 1


def test_unknown_turn_time_uses_no_behaviour():
    d = _rec_dialogue()
    d.ds = ""
    for u in d.utterances:
        u.time = ""
    (ex,) = build_recommendation([d], UNeedCorpus(items=ITEMS, behaviours=list(PAST)))
    assert ex.time == "" and ex.history == []
    assert AttributeMatchRanker(ITEMS, PAST).count_before("b", ex.time) == 0


def test_turn_time_falls_back_to_the_dialogue_date():
    d = _rec_dialogue()
    for u in d.utterances:
        u.time = ""
    (ex,) = build_recommendation([d], UNeedCorpus(items=ITEMS, behaviours=list(PAST)))
    assert ex.time == "2024-01-10 00:00:00" and ex.history == ["a"]


# --- ties never follow file order ------------------------------------------------------------


def test_rank_candidates_is_independent_of_input_order():
    cands = [f"i{j}" for j in range(20)]
    flat = [0.0] * 20
    fwd = rank_candidates(cands, flat, seed=3)
    rev = rank_candidates(list(reversed(cands)), flat, seed=3)
    assert fwd == rev and sorted(fwd) == sorted(cands)
    assert rank_candidates(cands, flat, seed=4) != fwd  # the seed, not the file, orders ties
    # higher scores first regardless of ties
    assert rank_candidates(["x", "y", "z"], [0.1, 0.9, 0.5]) == ["y", "z", "x"]
    with pytest.raises(MetricInputError):
        rank_candidates(["x"], [float("nan")])
    with pytest.raises(MetricInputError):
        rank_candidates(["x"], [1.0], rule="file")  # type: ignore[arg-type]


def test_pessimistic_rule_puts_the_target_last_among_its_ties():
    # scores: p=1, a=b=t=0.5, c=0 -> pessimistic rank of t is 4 (after p, a, b)
    cands, scores = ["t", "a", "c", "b", "p"], [0.5, 0.5, 0.0, 0.5, 1.0]
    for order in (list(range(5)), [4, 3, 2, 1, 0]):
        r = rank_candidates(
            [cands[i] for i in order], [scores[i] for i in order], targets=["t"], rule="pessimistic"
        )
        assert r.index("t") == 3 and r[0] == "p" and r[-1] == "c"


def test_all_tied_examples_are_counted_and_ranked_pessimistically():
    exs = [
        RecommendationExample([], [], ["a", "b", "t"], ["t"], time="2024-01-10 00:00:00"),
        RecommendationExample([], [], ["t", "b", "a"], ["t"], time="2024-01-10 00:00:00"),
        RecommendationExample([("skin", "dry")], [], ["a", "t"], ["t"], time="2024-01-10 00:00:00"),
    ]
    items = {**ITEMS, "t": Item("t", [("skin", "dry")])}
    ranker = AttributeMatchRanker(items, [])
    assert count_all_tied(ranker.scores(exs)) == 2
    m = ranker.evaluate(exs)
    # all-tied samples: t ranks 3rd of 3 whatever the file order; the third sample ranks it 1st
    assert m["all_tied"] == 2
    assert m["mrr@10"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert score_predictions("recommendation", exs, ranker.scores(exs)) == m


def test_reversing_the_candidate_list_of_the_real_sample_changes_nothing(uneed_dir: Path):
    corpus = load_uneed_dir(uneed_dir)
    exs = [e for s in ("train", "valid", "test") for e in build_task_samples(corpus, s).recommendation]
    assert exs, "the sample has recommendation turns"
    ranker = AttributeMatchRanker(corpus.items, corpus.behaviours)
    flipped = [RecommendationExample(**{**e.__dict__, "candidates": e.candidates[::-1]}) for e in exs]
    assert ranker.evaluate(exs) == ranker.evaluate(flipped)
    assert ranker.rank(exs) == ranker.rank(flipped)
    assert ranker.evaluate(exs)["all_tied"] == count_all_tied(ranker.scores(exs))


# --- recommendation protocol: hand-worked rankings per candidate-set rule ---------------------


def test_protocol_on_the_files_candidate_list():
    # rule 1: the turn's rec_item_candidates; target t ranks 2nd (matches 1 need, p matches 2)
    items = {
        "p": Item("p", [("skin", "dry"), ("effect", "hydrating")]),
        "t": Item("t", [("skin", "dry")]),
        **{f"n{j}": Item(f"n{j}", [("skin", "oily")]) for j in range(60)},
    }
    cands = ["p", "t"] + [f"n{j}" for j in range(60)]
    ex = RecommendationExample(
        [("skin", "dry"), ("effect", "hydrating")], [], cands, ["t"], time="2024-01-10 10:00:00"
    )
    m = AttributeMatchRanker(items, [], history_weight=0.0, popularity_weight=0.0).evaluate([ex])
    assert m["hit@10"] == 1.0 and m["mrr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx(1 / 1.584962500721156)  # 1/log2(3)
    assert m["hit@50"] == 1.0 and m["mrr@50"] == 0.5 and m["all_tied"] == 0
    # a target tied with 60 others ranks 61st (pessimistic): outside the top 50
    ex2 = RecommendationExample([], [], cands, ["t"], time="2024-01-10 10:00:00")
    m2 = AttributeMatchRanker(items, [], history_weight=0.0, popularity_weight=0.0).evaluate([ex2])
    assert m2["hit@50"] == 0.0 and m2["mrr@50"] == 0.0 and m2["all_tied"] == 1


def test_protocol_category_fallback_when_the_file_has_no_candidates():
    # rule 2: no candidate list -> every item of the recommended item's category (1801 here)
    d = _rec_dialogue()
    d.utterances[1].rec_candidates = None
    d.utterances[1].rec_item_info = ["t@1801"]
    items = {
        "t": Item("t", [("一级类目", "1801"), ("skin", "dry")]),
        "o": Item("o", [("一级类目", "1801"), ("skin", "oily")]),
        "x": Item("x", [("一级类目", "1625"), ("skin", "dry")]),
    }
    (ex,) = build_recommendation([d], UNeedCorpus(items=items))
    assert sorted(ex.candidates) == ["o", "t"]  # the other category's x is no candidate
    m = AttributeMatchRanker(items, [], popularity_weight=0.0).evaluate([ex])
    assert m["mrr@10"] == 1.0 and m["all_tied"] == 0


# --- a checkpoint loads whole or not at all ------------------------------------------------


@pytest.fixture(scope="module")
def tagger_ckpt(tmp_path_factory) -> Path:
    from zjulab.crs.samples import UnderstandingExample

    model, tok = tiny_encoder(2)
    exs = [UnderstandingExample("my skin is dry", [("skin", 11, 14)], [("skin", "dry")])] * 4
    tagger = SpanTagger(
        TaggerConfig(max_steps=2, batch_size=4, device="cpu", max_length=32), model=model, tokenizer=tok
    )
    tagger.fit(exs)
    path = tmp_path_factory.mktemp("ck") / "tagger"
    tagger.save(path)
    return path


def test_checkpoint_lists_every_file_with_its_hash(tagger_ckpt: Path):
    info = json.loads((tagger_ckpt / "crs.json").read_text())
    files = info["files"]
    on_disk = {p.relative_to(tagger_ckpt).as_posix() for p in tagger_ckpt.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"crs.json"}
    assert "head.pt" in files and all(len(h) == 64 for h in files.values())
    SpanTagger.load(tagger_ckpt, device="cpu")  # whole: loads


@pytest.mark.parametrize("part", ["head.pt", "backbone/config.json"])
def test_missing_part_is_a_typed_error(tagger_ckpt: Path, tmp_path: Path, part: str):
    broken = tmp_path / "ck"
    shutil.copytree(tagger_ckpt, broken)
    (broken / part).unlink()
    with pytest.raises(CheckpointError, match=part):
        SpanTagger.load(broken, device="cpu")


def test_altered_part_is_a_typed_error(tagger_ckpt: Path, tmp_path: Path):
    broken = tmp_path / "ck"
    shutil.copytree(tagger_ckpt, broken)
    weights = next(p for p in (broken / "backbone").iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        SpanTagger.load(broken, device="cpu")


def test_head_of_another_model_is_a_typed_error(tagger_ckpt: Path, tmp_path: Path):
    import hashlib

    import torch

    broken = tmp_path / "ck"
    shutil.copytree(tagger_ckpt, broken)
    state = torch.load(broken / "head.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, broken / "head.pt")
    info = json.loads((broken / "crs.json").read_text())
    info["files"]["head.pt"] = hashlib.sha256((broken / "head.pt").read_bytes()).hexdigest()
    (broken / "crs.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="missing"):
        SpanTagger.load(broken, device="cpu")


def test_checkpoint_without_manifest_is_refused(tagger_ckpt: Path, tmp_path: Path):
    broken = tmp_path / "ck"
    shutil.copytree(tagger_ckpt, broken)
    info = json.loads((broken / "crs.json").read_text())
    del info["files"]
    (broken / "crs.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="lists no files"):
        SpanTagger.load(broken, device="cpu")


# --- Chinese text is measured as Chinese ----------------------------------------------------


def test_text_tokens_split_cjk_after_letters_and_digits():
    assert text_tokens("30ml装的面霜") == ["30ml", "装", "的", "面", "霜"]
    assert text_tokens("SK-II神仙水230ml") == ["sk", "-", "ii", "神", "仙", "水", "230ml"]
    assert text_tokens("iPhone15手机壳") == ["iphone15", "手", "机", "壳"]
    assert text_tokens("送3片面膜") == ["送", "3", "片", "面", "膜"]


def test_distinct_on_mixed_script_counts_characters():
    # 10 tokens, 6 distinct (30ml 装 的 面 霜 眼)
    assert distinct_n(["30ml装的面霜", "30ml装的眼霜"], 1) == pytest.approx(0.6)
    # two 7-character responses sharing 5 characters: 14 tokens, 9 distinct... by hand:
    a, b = "这款面霜很好用", "这款面霜很保湿"
    assert distinct_n([a, b], 1) == pytest.approx(len(set(a) | set(b)) / 14)


def test_bleu_on_mixed_script_is_character_level():
    # hypothesis "30ml装面霜" vs reference "30ml装的面霜": 4 of 4 unigrams match; BP = exp(1 - 5/4)
    import math

    assert bleu(["30ml装面霜"], ["30ml装的面霜"], 1, tokenize="zh") == pytest.approx(math.exp(1 - 5 / 4))
    ex = build_generation(
        [
            Dialogue(
                "d",
                "beauty",
                [
                    Utterance(1, "user", "hi", "user_need"),
                    Utterance(2, "assistant", "30ml装的面霜", "system_ask"),
                ],
            )
        ]
    )
    out = generation_scores(ex, ["30ml装面霜"])
    assert out["corpus_bleu1"] == pytest.approx(math.exp(1 - 5 / 4))
    # the authors' BLEU on Chinese: every character a token (7 of the reference's 8 match)
    assert out["bleu1"] == pytest.approx(math.exp(1 - 8 / 7))
    assert set(out) == {f"{m}{n}" for n in range(1, 5) for m in ("bleu", "corpus_bleu", "distinct")}


# --- synthetic splits do not memorise ---------------------------------------------------------


def test_synthetic_splits_have_no_exact_or_near_duplicate_overlap():
    corpus = synthetic_corpus(SyntheticConfig(dialogues_per_category=20, items_per_category=20, users=15))
    for split in ("test", "valid"):
        o = split_overlap(corpus, test=split)
        assert o["understanding_total"] > 20 and o["generation_total"] > 5
        assert o["understanding_exact"] == o["understanding_near"] == 0
        assert o["generation_exact"] == o["generation_near"] == 0


def test_split_overlap_counts_exact_and_near_duplicates():
    def dlg(sid: str, texts: list[str]) -> Dialogue:
        return Dialogue(
            sid, "beauty", [Utterance(i + 1, "user", t, "user_need") for i, t in enumerate(texts)]
        )

    corpus = UNeedCorpus(
        dialogues={
            "train": [dlg("a", ["I want a toner", "dry skin"])],
            "test": [dlg("b", ["I want a toner", "Dry skin!", "for men"])],
        }
    )
    o = split_overlap(corpus)
    assert (o["understanding_total"], o["understanding_exact"], o["understanding_near"]) == (3, 1, 2)


# --- multi-valued needs are kept (real sample) ----------------------------------------------


def test_multi_valued_needs_keep_every_value_on_the_real_sample(uneed_dir: Path):
    corpus = load_uneed_dir(uneed_dir)
    dialogues = [d for ds in corpus.dialogues.values() for d in ds]
    d = next(d for d in dialogues if d.utterances[0].text == "男士洗面奶水乳有没有套装")
    from zjulab.crs.generation import generation_prompt

    elic = build_elicitation([d])
    assert [v for k, v in elic[0].known if k == "品类"] == ["洗面奶", "水乳", "套装"]
    gens = build_generation([d], corpus)
    # the assistant asks 肤质 as 偏油 or 偏干: both values are kept on the example, but they are
    # words of the gold response, so the prompt names the asked key only
    ask = next(g for g in gens if "肤质" in g.ask)
    assert [v for k, v in ask.ask_values if k == "肤质"] == ["偏油", "偏干"]
    prompt = generation_prompt(ask)
    assert "ask about: 年龄, 肤质\n" in prompt and "品类: 洗面奶; 品类: 水乳; 品类: 套装" in prompt
    assert "偏油" not in prompt and "偏干" not in prompt
    for e in build_recommendation([d], corpus) + gens:
        assert [v for k, v in e.needs if k == "品类"] == ["洗面奶", "水乳", "套装"]
    from zjulab.crs.samples import build_understanding

    first = build_understanding([d])[0]  # tagging targets: one span per value
    assert [first.text[a:b] for k, a, b in first.spans if k == "品类"] == ["洗面奶", "水乳", "套装"]


# --- task 5 on real files: a side file of human scores -------------------------------------


def test_missing_scores_name_the_side_file(uneed_dir: Path):
    corpus = load_uneed_dir(uneed_dir)
    with pytest.raises(MissingScoresError, match=r"quality_scores\.csv"):
        task_examples(corpus, "test", "evaluation")


def test_side_file_round_trip_and_task5_on_real_files(uneed_dir: Path, tmp_path: Path):
    corpus = load_uneed_dir(uneed_dir)
    rated = []
    for ds in corpus.dialogues.values():
        for d in ds:
            for u in d.utterances:
                if not u.is_user:
                    d.quality[u.seq_no] = float(1 + (len(u.text) % 5))
                    rated.append((d.sid, u.seq_no))
    out = tmp_path / "u"
    save_uneed_dir(out, corpus)
    for f in out.glob("*_dialogue.json"):  # scores travel only in the side file
        recs = json.loads(f.read_text())
        for r in recs:
            r.pop("quality", None)
        f.write_text(json.dumps(recs, ensure_ascii=False))
    save_quality_scores(out / "quality_scores.csv", [d for ds in corpus.dialogues.values() for d in ds])
    assert len(load_quality_scores(out / "quality_scores.csv")) == len(rated)
    again = load_uneed_dir(out)
    test = task_examples(again, "test", "evaluation")
    assert len(test) >= 2 and all(1.0 <= e.score <= 5.0 for e in test)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sid,seq,score\n", "header must be sid,seq_no,score"),
        ("sid,seq_no,score\nd1,two,3\n", ":2: seq_no 'two'"),
        ("sid,seq_no,score\nd1,2,good\n", ":2: score 'good'"),
        ("sid,seq_no,score\nd1,2,nan\n", ":2: score 'nan' is not finite"),
        ("sid,seq_no,score\nd1,2,3\nd1,2,4\n", ":3: sid d1 seq_no 2 already scored on line 2"),
        ("sid,seq_no,score\n,2,3\n", ":2: empty sid"),
        ("sid,seq_no,score,ref\n", "header must be sid,seq_no,score or sid,seq_no,score,reference"),
        ("sid,seq_no,score,reference\nd1,2,3\n", ":2: expected 4 fields, got 3"),
    ],
)
def test_side_file_errors_name_file_and_line(tmp_path: Path, body: str, message: str):
    p = tmp_path / "quality_scores.csv"
    p.write_text(body)
    with pytest.raises(DataFormatError, match=message):
        load_quality_scores(p)


def test_side_file_reference_column_reaches_the_evaluation_examples(uneed_dir: Path, tmp_path: Path):
    from zjulab.crs.loaders import load_quality_references

    corpus = load_uneed_dir(uneed_dir)
    gold = {}
    for ds in corpus.dialogues.values():
        for d in ds:
            for k, u in enumerate(x for x in d.utterances if not x.is_user):
                d.quality[u.seq_no] = 3.0
                if k % 2 == 0:  # every other rated turn has a gold response, with a comma in it
                    d.references[u.seq_no] = gold[(d.sid, u.seq_no)] = f"参考回复, {u.seq_no}"
    out = tmp_path / "u"
    save_uneed_dir(out, corpus)
    for f in out.glob("*_dialogue.json"):  # scores and references travel only in the side file
        recs = json.loads(f.read_text())
        for r in recs:
            r.pop("quality", None)
            r.pop("references", None)
        f.write_text(json.dumps(recs, ensure_ascii=False))
    side = out / "quality_scores.csv"
    save_quality_scores(side, [d for ds in corpus.dialogues.values() for d in ds])
    assert side.read_text().splitlines()[0] == "sid,seq_no,score,reference"
    assert load_quality_references(side) == gold
    again = load_uneed_dir(out)
    exs = [e for split in ("train", "valid", "test") for e in task_examples(again, split, "evaluation")]
    assert {e.reference for e in exs} == set(gold.values()) | {""}
    side.write_text("sid,seq_no,score\n" + "".join(f"{s},{q},3\n" for s, q in gold))  # no column: none
    assert load_quality_references(side) == {}


def test_synthetic_corpus_records_gold_explanations_and_ruber_uses_them():
    from zjulab.common.testing import HashingEncoder
    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import build_evaluation
    from zjulab.crs.synthetic import SyntheticConfig, synthetic_corpus

    corpus = synthetic_corpus(
        SyntheticConfig(dialogues_per_category=8, items_per_category=25, users=20, seed=3)
    )
    again = synthetic_corpus(
        SyntheticConfig(dialogues_per_category=8, items_per_category=25, users=20, seed=3)
    )
    exs = build_evaluation([d for ds in corpus.dialogues.values() for d in ds])
    assert exs and all(e.reference for e in exs)
    assert [e.reference for e in exs] == [
        e.reference for e in build_evaluation([d for ds in again.dialogues.values() for d in ds])
    ]
    good = [e for e in exs if e.score >= 4.0]
    assert good and sum(e.reference == e.response for e in good) >= len(good) // 4
    r = Ruber(HashingEncoder(128), steps=20, batch_size=8).fit(exs)
    ref = r.referenced(exs)
    assert all(v is not None for v in ref)
    assert r.predict(exs) != pytest.approx(r.unreferenced(exs))


def test_side_file_rows_must_name_assistant_utterances(uneed_dir: Path, tmp_path: Path):
    out = tmp_path / "u"
    shutil.copytree(uneed_dir, out)
    corpus = load_uneed_dir(uneed_dir)
    d = corpus.split("test")[0]
    user = next(u for u in d.utterances if u.is_user)
    (out / "quality_scores.csv").write_text(f"sid,seq_no,score\n{d.sid},{user.seq_no},3\n")
    with pytest.raises(DataFormatError, match="user utterance"):
        load_uneed_dir(out)
    (out / "quality_scores.csv").write_text("sid,seq_no,score\nnope,1,3\n")
    with pytest.raises(DataFormatError, match="no utterance"):
        load_uneed_dir(out)


def test_cli_eval_evaluation_without_scores_names_the_file(uneed_dir: Path, capsys):
    from zjulab.crs.cli import main

    assert main(["eval", "evaluation", "--data", str(uneed_dir)]) != 0
    err = capsys.readouterr().err
    assert "quality_scores.csv" in err and "pearson" not in err


def test_evaluation_scores_report_cosine_hand_worked():
    from zjulab.crs.samples import EvaluationExample

    exs = [EvaluationExample([], "r", s) for s in (1.0, 2.0, 3.0)]
    out = evaluation_scores(exs, [1.0, 2.0, 2.0])
    # cos = (1 + 4 + 6) / (sqrt(9) * sqrt(14))
    assert out["cosine"] == pytest.approx(11 / (3 * 14**0.5))
    assert out["pearson"] == pytest.approx(0.8660254, abs=1e-6)


def test_quality_regressor_checkpoint_loads_whole(tmp_path: Path):
    from zjulab.crs.samples import EvaluationExample

    model, tok = tiny_encoder(4, hidden_size=32)
    reg = QualityRegressor(
        QualityConfig(max_steps=2, batch_size=2, device="cpu", max_length=32), model=model, tokenizer=tok
    )
    reg.fit([EvaluationExample([("user", "hi")], "hello", s) for s in (1.0, 5.0)])
    reg.save(tmp_path / "q")
    (tmp_path / "q" / "head.pt").unlink()
    with pytest.raises(CheckpointError, match=r"head\.pt"):
        QualityRegressor.load(tmp_path / "q", device="cpu")


# --- other order-dependent tie breaks -------------------------------------------------------


def test_frequency_elicitor_ties_do_not_follow_file_order():
    from zjulab.crs.elicitation import FrequencyElicitor
    from zjulab.crs.samples import ElicitationExample

    train = [ElicitationExample([], [], [a], "beauty") for a in ("skin", "effect", "price")]
    test = [ElicitationExample([], [], ["effect"], "beauty")]
    fwd = FrequencyElicitor(k=1).fit(train).predict(test)
    rev = FrequencyElicitor(k=1).fit(train[::-1]).predict(test)
    assert fwd == rev == [["effect"]]  # all asked once: by name


def test_retrieval_responder_ties_do_not_follow_file_order():
    from zjulab.common.testing import HashingEncoder
    from zjulab.crs.generation import RetrievalResponder
    from zjulab.crs.samples import GenerationExample

    # two training prompts that are identical, with different responses
    train = [
        GenerationExample([("user", "hi")], [], [], None, r, category="beauty") for r in ("zeta", "alpha")
    ]
    test = [GenerationExample([("user", "hi")], [], [], None, "x", category="beauty")]
    fwd = RetrievalResponder(HashingEncoder(64)).fit(train).generate(test)
    rev = RetrievalResponder(HashingEncoder(64)).fit(train[::-1]).generate(test)
    assert fwd == rev == ["alpha"]


def test_protocol_category_rule_ignores_the_files_short_list():
    # rule 3: candidates="category" ranks against every item of the category even when the file
    # lists 3 candidates; t and p both match the one valued need (skin: dry), so under the
    # pessimistic rule t ranks 2nd of 4, behind p
    d = _rec_dialogue()
    d.utterances[0].attributes.append(Attribute("effect", "", -1, -1))
    d.utterances[1].rec_item_info = ["t@1801"]
    items = {
        "t": Item("t", [("一级类目", "1801"), ("skin", "dry")]),
        "p": Item("p", [("一级类目", "1801"), ("skin", "dry"), ("x", "dry")]),
        "a": Item("a", [("一级类目", "1801")]),
        "b": Item("b", [("一级类目", "1801")]),
        "z": Item("z", [("一级类目", "1625"), ("skin", "dry")]),
    }
    corpus = UNeedCorpus(items=items)
    (filed,) = build_recommendation([d], corpus)
    (whole,) = build_recommendation([d], corpus, candidates="category")
    assert filed.candidates == ["a", "b", "t"]
    assert sorted(whole.candidates) == ["a", "b", "p", "t"]
    r = AttributeMatchRanker(items, [], popularity_weight=0.0)
    assert r.evaluate([filed])["mrr@10"] == 1.0
    assert r.evaluate([whole])["mrr@10"] == 0.5
    assert r.evaluate([whole])["ndcg@10"] == pytest.approx(1 / 1.584962500721156)
    with pytest.raises(Exception, match="candidates must be"):
        build_recommendation([d], corpus, candidates="all")  # type: ignore[arg-type]


def test_verdicts_say_plainly_when_training_does_not_beat_the_baseline():
    from zjulab.crs.suite import TaskResult, verdicts

    res = [
        TaskResult("understanding", "lexicon", "baseline", {"f1": 0.8}),
        TaskResult("understanding", "tagger", "trained", {"f1": 0.2}),
        TaskResult("elicitation", "frequency", "baseline", {"f1": 0.3}),
        TaskResult("elicitation", "weak", "baseline", {"f1": 0.1}),
        TaskResult("elicitation", "classifier", "trained", {"f1": 0.5}),
    ]
    assert verdicts(res) == [
        "understanding: tagger f1 0.2000 does NOT beat lexicon 0.8000",
        "elicitation: classifier f1 0.5000 beats frequency 0.3000",
    ]


# --- RUBER: referenced + trained unreferenced ------------------------------------------------


def _pairs():
    from zjulab.crs.samples import EvaluationExample

    topics = ["toner dry skin", "phone large battery", "shoes running size", "camera high resolution"]
    topics += ["sofa leather brown", "laptop light thin", "serum bright face", "boots winter warm"]
    return [EvaluationExample([("user", f"i want {t}")], f"this {t} fits", 5.0) for t in topics]


def test_ruber_unreferenced_learns_to_prefer_the_true_response():
    from zjulab.common.testing import HashingEncoder
    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import EvaluationExample

    train = _pairs()
    r = Ruber(HashingEncoder(128), steps=400, batch_size=8, learning_rate=1e-2, seed=0).fit(train)
    assert sum(r.train_losses[-20:]) / 20 < sum(r.train_losses[:20]) / 20
    true = r.unreferenced(train)
    swapped = r.unreferenced(
        [EvaluationExample(e.context, train[(i + 1) % len(train)].response, 1.0) for i, e in enumerate(train)]
    )
    # untrained (1 step) the mean gap is 0.004; trained it is 0.58
    assert sum(true) / 8 - sum(swapped) / 8 > 0.4
    assert sum(t > s for t, s in zip(true, swapped)) >= 6
    # with no reference the combined score is the unreferenced one
    assert r.predict(train) == pytest.approx(true)


def test_ruber_referenced_and_combination_hand_worked():
    import numpy as np

    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import EvaluationExample

    class Fixed:
        dim = 2

        def __init__(self):
            self.table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [-1.0, 0.0], "user: x": [1.0, 0.0]}

        def encode(self, texts):
            return np.asarray([self.table[t] for t in texts], dtype=np.float32)

    exs = [
        EvaluationExample([("user", "x")], "a", 1.0, reference="a"),  # cos 1 -> 1.0
        EvaluationExample([("user", "x")], "a", 2.0, reference="b"),  # cos 0 -> 0.5
        EvaluationExample([("user", "x")], "a", 3.0, reference="c"),  # cos -1 -> 0.0
    ]
    # trained on two different responses (one alone is refused: every negative would equal it)
    train = [EvaluationExample([("user", "x")], t, 1.0) for t in ("a", "b")]
    r = Ruber(Fixed(), steps=1, batch_size=2).fit(train)
    assert r.referenced(exs) == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    # the unreferenced score is the same for identical (context, response): normalised to 0.5
    # min is the default, as in the reference code's hybrid score
    assert Ruber(Fixed(), steps=1, batch_size=2).combine == "min"
    assert Ruber(Fixed(), steps=1, batch_size=2).fit(train).predict(exs) == pytest.approx(
        [0.5, 0.5, 0.0], abs=1e-6
    )
    mean = Ruber(Fixed(), steps=1, batch_size=2, combine="mean").fit(train)
    assert mean.predict(exs) == pytest.approx([0.75, 0.5, 0.25], abs=1e-6)
    with pytest.raises(Exception, match="combine must be"):
        Ruber(Fixed(), combine="median")
    with pytest.raises(Exception, match="referenced_pooling must be"):
        Ruber(Fixed(), referenced_pooling="mean")
    with pytest.raises(DataFormatError, match="at least 2"):
        Ruber(Fixed()).fit(exs[:1])
    with pytest.raises(DataFormatError, match="at least 2 different responses; all 3 examples have 'a'"):
        Ruber(Fixed()).fit(exs)


def test_ruber_never_trains_on_a_negative_equal_to_its_positive():
    # half the examples share one response: a negative drawn among them equals its positive,
    # scores the same and teaches nothing; those draws are redrawn, so every pair the network
    # sees differs (recorded through the network's inputs)
    from zjulab.common.testing import HashingEncoder
    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import EvaluationExample

    exs = [
        EvaluationExample([("user", f"need {i}")], "ok, here it is" if i % 2 else f"item {i}", 1.0)
        for i in range(10)
    ]
    r = Ruber(HashingEncoder(64), steps=30, batch_size=8, seed=3)
    enc = r.encoder
    r.fit(exs)
    seen = []
    real = type(r.net).forward

    def spy(net, c, resp):
        seen.append(resp.detach().clone())
        return real(net, c, resp)

    import torch

    vec = {e.response: torch.as_tensor(enc.encode([e.response])[0]) for e in exs}
    type(r.net).forward = spy
    try:
        r.fit(exs)
    finally:
        type(r.net).forward = real
    assert len(r.train_losses) == 30
    for pos, neg in zip(seen[0::2], seen[1::2]):  # each step scores positives, then negatives
        assert pos.shape == neg.shape and not any(torch.equal(a, b) for a, b in zip(pos, neg))
    assert any(torch.equal(row, vec["ok, here it is"]) for batch in seen[0::2] for row in batch)


def test_ruber_trains_every_step_on_near_duplicate_data_and_names_the_one_response_shortly():
    from zjulab.common.testing import HashingEncoder
    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import EvaluationExample

    # 999 examples share a response (up to case and spacing); one differs: every step still trains,
    # each positive of the large group meeting the one other response
    exs = [
        EvaluationExample([("user", f"need {i}")], "Here  it is" if i % 2 else "here it is", 1.0)
        for i in range(999)
    ]
    exs.append(EvaluationExample([("user", "need more")], "something else entirely", 1.0))
    r = Ruber(HashingEncoder(64), steps=50, batch_size=4, seed=0).fit(exs)
    assert len(r.train_losses) == 50
    long = [EvaluationExample([("user", f"u{i}")], "x" * 10_000, 1.0) for i in range(3)]
    with pytest.raises(DataFormatError, match=r"all 3 examples have 'x{77}\.\.\.', so") as info:
        Ruber(HashingEncoder(64)).fit(long)
    assert len(str(info.value)) < 200


def test_chinese_defaults_for_uneed_data():
    # U-NEED is Chinese: the encoder tasks default to the Chinese BERT of the hub card
    # "bert-base-chinese", the generator to a Chinese-capable chat LM; text is tokenised per character
    from zjulab.crs.config import ElicitationConfig, GeneratorConfig, RankerConfig

    for cfg in (TaggerConfig(), ElicitationConfig(), RankerConfig(), QualityConfig()):
        assert cfg.model_name_or_path == "bert-base-chinese"
    assert GeneratorConfig().model_name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"


# --- found while auditing the classes above ---------------------------------------------------


def test_split_overlap_reports_recommendation_pairs_seen_in_train():
    # a test recommendation whose needs and target are a train example's can be answered by
    # lookup: the overlap report counts it (same needs in another order is the same pair)
    def dlg(sid: str, needs: list[tuple[str, str]], target: str) -> Dialogue:
        text = " ".join(v for _, v in needs)
        attrs, pos = [], 0
        for k, v in needs:
            attrs.append(Attribute(k, v, pos, pos + len(v)))
            pos += len(v) + 1
        return Dialogue(
            sid,
            "beauty",
            [
                Utterance(1, "user", text, "user_need", attributes=attrs),
                Utterance(2, "assistant", "try this", "system_recommend", rec_item_ids=[target]),
            ],
        )

    corpus = UNeedCorpus(
        dialogues={
            "train": [dlg("a", [("skin", "dry"), ("size", "small")], "i1")],
            "test": [
                dlg("b", [("size", "small"), ("skin", "dry")], "i1"),  # seen pair
                dlg("c", [("skin", "dry")], "i1"),  # other needs
                dlg("d", [("skin", "dry"), ("size", "small")], "i2"),  # other target
            ],
        }
    )
    o = split_overlap(corpus)
    assert (o["recommendation_total"], o["recommendation_exact"]) == (3, 1)


def test_stray_file_in_the_backbone_is_a_typed_error(tagger_ckpt: Path, tmp_path: Path):
    # a file the manifest does not list would be read by from_pretrained (an index or adapter
    # file changes what loads), so the checkpoint is not the one that was saved
    broken = tmp_path / "ck"
    shutil.copytree(tagger_ckpt, broken)
    (broken / "backbone" / "adapter_config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"adapter_config\.json"):
        SpanTagger.load(broken, device="cpu")
    # a note next to the checkpoint (outside backbone/) is not part of the model
    shutil.rmtree(broken)
    shutil.copytree(tagger_ckpt, broken)
    (broken / "NOTES.txt").write_text("trained on the sample")
    SpanTagger.load(broken, device="cpu")


def test_heads_start_from_the_configured_seed_whatever_ran_before():
    # TrainConfig.seed promises reproducible initialisation: a head built after other code
    # drew from the global RNG must equal one built from a fresh state (before, the tagger's
    # BiLSTM/CRF, the multi-label and regression heads took the global RNG, so the same run
    # gave another model in each process)
    import torch

    from zjulab.crs.config import ElicitationConfig
    from zjulab.crs.elicitation import AttributeClassifier
    from zjulab.crs.tagger import bio_tag_set

    def heads(draw: int) -> list[torch.Tensor]:
        torch.manual_seed(draw)
        torch.rand(7)
        out = []
        m, t = tiny_encoder(2)
        tagger = SpanTagger(TaggerConfig(device="cpu", seed=3), model=m, tokenizer=t)
        tagger._build(bio_tag_set(["skin", "size"]))
        m, t = tiny_encoder(2)
        clf = AttributeClassifier(ElicitationConfig(device="cpu", seed=3), model=m, tokenizer=t)
        clf._build(["skin", "size"])
        m, t = tiny_encoder(2)
        reg = QualityRegressor(QualityConfig(device="cpu", seed=3), model=m, tokenizer=t)
        reg._build()
        for net in (tagger.net, clf.net, reg.net):
            out += [p.detach().clone() for n, p in net.named_parameters() if not n.startswith("encoder.")]
        return out

    a, b = heads(1), heads(2)
    assert len(a) == len(b) > 3
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # the seed matters
    m, t = tiny_encoder(2)
    other = SpanTagger(TaggerConfig(device="cpu", seed=4), model=m, tokenizer=t)
    other._build(bio_tag_set(["skin", "size"]))
    first = next(p for n, p in other.net.named_parameters() if not n.startswith("encoder."))
    assert not torch.equal(a[0], first)
    # and building a head leaves the global RNG where it was
    m, t = tiny_encoder(2)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    SpanTagger(TaggerConfig(device="cpu", seed=4), model=m, tokenizer=t)._build(bio_tag_set(["skin"]))
    assert torch.equal(torch.rand(1), expected)


def test_ruber_referenced_score_is_the_cosine_of_max_min_pooled_word_vectors():
    from typing import ClassVar

    import numpy as np

    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import EvaluationExample

    class Words:
        dim = 2
        table: ClassVar[dict[str, list[float]]] = {
            "a": [1.0, 0.0],
            "b": [0.0, 1.0],
            "c": [-1.0, 0.0],
            "面": [1.0, 0.0],
            "膜": [0.0, 1.0],
        }

        def encode(self, texts):
            return np.asarray([self.table.get(t, [0.5, 0.5]) for t in texts], dtype=np.float32)

    exs = [
        # "a b": max [1, 1], min [0, 0]; "a c": max [1, 0], min [-1, 0]; cos = 1 / (√2·√2) = 0.5
        EvaluationExample([("user", "x")], "a b", 1.0, reference="a c"),
        # one token per CJK character: "面膜" pools like "a b" -> cos 1
        EvaluationExample([("user", "x")], "面膜", 2.0, reference="a b"),
        EvaluationExample([("user", "x")], "a b", 3.0, reference=""),  # no reference
    ]
    r = Ruber(Words(), steps=1, batch_size=2)
    assert r.referenced(exs) == pytest.approx([0.75, 1.0, None])
    # the sentence variant embeds the whole texts (both unknown here: [0.5, 0.5] each, cos 1)
    assert Ruber(Words(), referenced_pooling="sentence").referenced(exs)[:2] == pytest.approx([1.0, 1.0])


def test_ruber_blank_texts_neither_crash_nor_count_as_references(caplog):
    """Review findings: a batch without any word on one side crashed (width 2 instead of 2*dim);
    a white-space reference was scored as a reference with cosine 0."""
    from zjulab.common.testing import HashingEncoder
    from zjulab.crs.quality import Ruber
    from zjulab.crs.samples import EvaluationExample

    r = Ruber(HashingEncoder(16), steps=1, batch_size=2)
    assert r.referenced([EvaluationExample([], "a b", 0.0, reference="   ")]) == [None]
    assert r.referenced([EvaluationExample([], "", 0.0, reference="a")]) == pytest.approx([0.5])  # cos 0
    exs = [
        EvaluationExample([("user", "x")], "a b", 1.0, reference="a b"),
        EvaluationExample([("user", "y")], "c", 2.0, reference=" "),
    ]
    r.fit(exs)
    assert r.referenced(exs) == pytest.approx([1.0, None])
    with caplog.at_level("WARNING"):
        assert len(r.predict(exs)) == 2
    assert "1 of 2 examples have no reference" in caplog.text


def test_constant_task5_scores_say_why_the_correlations_are_nan(caplog):
    import math

    from zjulab.crs.samples import EvaluationExample
    from zjulab.crs.task_scores import evaluation_scores

    exs = [EvaluationExample([], "a", s) for s in (1.0, 2.0, 3.0)]
    with caplog.at_level("WARNING"):
        out = evaluation_scores(exs, [0.0, 0.0, 0.0])
    assert math.isnan(out["pearson"]) and "every predicted score is 0.0 on 3 examples" in caplog.text
