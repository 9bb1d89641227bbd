from pathlib import Path

import pytest
import torch

from zjulab.common.errors import SchemaVersionError
from zjulab.common.io import read_json, write_json
from zjulab.common.testing import HashingEncoder, tiny_causal_lm, tiny_encoder
from zjulab.crs.config import ElicitationConfig, GeneratorConfig, QualityConfig, RankerConfig
from zjulab.crs.dialogue import Behaviour, Item
from zjulab.crs.elicitation import AttributeClassifier, FrequencyElicitor
from zjulab.crs.errors import CrsConfigError, NotTrainedError, UnknownLabelError
from zjulab.crs.generation import ResponseGenerator, RetrievalResponder, generation_prompt
from zjulab.crs.quality import QualityRegressor, RuberScorer
from zjulab.crs.recommendation import AttributeMatchRanker, BiEncoderRanker, query_text
from zjulab.crs.samples import ElicitationExample, EvaluationExample, GenerationExample, RecommendationExample


def enc(seed: int = 0):
    return tiny_encoder(seed, hidden_size=32)


# --- task 2 ----------------------------------------------------------------------------------


def test_frequency_elicitor_skips_known_attributes():
    train = [
        ElicitationExample([], [], ["skin"], "beauty"),
        ElicitationExample([], [], ["skin"], "beauty"),
        ElicitationExample([], [], ["effect"], "beauty"),
        ElicitationExample([], [], ["size"], "shoes"),
    ]
    base = FrequencyElicitor(k=1).fit(train)
    test = [
        ElicitationExample([], [], ["skin"], "beauty"),
        ElicitationExample([], [("skin", "dry")], ["effect"], "beauty"),
        ElicitationExample([], [], ["size"], "toys"),  # unknown category: overall order
    ]
    assert base.predict(test) == [["skin"], ["effect"], ["skin"]]
    assert base.evaluate(test)["f1"] == pytest.approx(2 / 3)


def test_attribute_classifier_lowers_loss_and_round_trips(small_train, tmp_path: Path):
    data = small_train.elicitation[:16]
    model, tok = enc(1)
    clf = AttributeClassifier(
        ElicitationConfig(max_steps=30, batch_size=8, learning_rate=2e-3, device="cpu", max_length=64),
        model=model,
        tokenizer=tok,
    )
    hist = clf.fit(data)
    assert hist.mean_loss(False) < 0.75 * hist.mean_loss(True)
    assert set(clf.labels) == {t for e in data for t in e.targets}
    preds = clf.predict(data)
    assert all(len(p) >= 1 for p in preds)  # min_labels
    clf.save(tmp_path / "elic")
    again = AttributeClassifier.load(tmp_path / "elic", device="cpu")
    assert torch.allclose(again.predict_proba(data), clf.predict_proba(data), atol=1e-5)


# --- task 3 ----------------------------------------------------------------------------------

ITEMS = {
    "a": Item("a", [("category", "beauty"), ("skin", "dry"), ("effect", "hydrating")]),
    "b": Item("b", [("category", "beauty"), ("skin", "oily"), ("effect", "hydrating")]),
    "c": Item("c", [("category", "beauty"), ("skin", "oily"), ("effect", "acne care")]),
}
LOG = [Behaviour("s", "u", "c", "2024-01-01 00:00:00")] * 3 + [
    Behaviour("s", "u", "b", "2024-01-01 00:00:00")
]


def test_attribute_match_ranker_hand_worked():
    ex = RecommendationExample(
        [("skin", "dry"), ("effect", "hydrating")],
        ["b"],
        ["c", "b", "a"],
        ["a"],
        category="beauty",
        time="2024-01-02 00:00:00",
    )
    ranker = AttributeMatchRanker(ITEMS, LOG)
    # a: 2 matches; b: 1 match + 0.5 history + 0.1*log(2)/log(4) = 1.55; c: 0 + 0.1
    assert ranker.score(ex, "a") == pytest.approx(2.0)
    assert ranker.score(ex, "b") == pytest.approx(1.55)
    assert ranker.score(ex, "c") == pytest.approx(0.1)
    assert ranker.rank([ex]) == [["a", "b", "c"]]
    assert AttributeMatchRanker.popularity(ITEMS, LOG).rank([ex]) == [["c", "b", "a"]]
    assert ranker.evaluate([ex])["mrr@10"] == 1.0
    assert ranker.evaluate([ex])["all_tied"] == 0


def test_query_text_uses_recent_distinct_history():
    ex = RecommendationExample([("skin", "dry")], ["a", "b", "a"], ["a"], ["a"], category="beauty")
    text = query_text(ex, ITEMS, max_history=1)
    assert (
        text == "category: beauty\nneeds: skin: dry\nviewed: category: beauty; skin: dry; effect: hydrating"
    )


def test_bi_encoder_ranker_lowers_loss(small_corpus, small_train, tmp_path: Path):
    data = small_train.recommendation[:12]
    model, tok = enc(2)
    cfg = RankerConfig(
        max_steps=25, batch_size=4, num_negatives=3, learning_rate=2e-3, device="cpu", max_length=48
    )
    ranker = BiEncoderRanker(small_corpus.items, cfg, model=model, tokenizer=tok)
    hist = ranker.fit(data)
    assert hist.mean_loss(False) < 0.7 * hist.mean_loss(True)
    ranked = ranker.rank(data)
    assert all(sorted(r) == sorted(e.candidates) for r, e in zip(ranked, data))
    ranker.save(tmp_path / "rank")
    assert BiEncoderRanker.load(tmp_path / "rank", small_corpus.items, device="cpu").rank(data) == ranked


# --- task 4 ----------------------------------------------------------------------------------


def test_retrieval_responder_returns_nearest_training_response():
    train = [
        GenerationExample(
            [("user", "want a phone for students")], [], ["price"], None, "what is your budget?"
        ),
        GenerationExample(
            [("user", "need dry skin toner")], [], ["effect"], None, "which effect do you want?"
        ),
    ]
    resp = RetrievalResponder(HashingEncoder(256)).fit(train)
    query = [GenerationExample([("user", "dry skin toner please")], [], ["effect"], None, "x")]
    assert resp.generate(query) == ["which effect do you want?"]
    with pytest.raises(NotTrainedError):
        RetrievalResponder().generate(query)


def test_generation_prompt_layout():
    ex = GenerationExample(
        [("user", "hi")],
        [("skin", "dry")],
        [],
        Item("a", [("skin", "dry")]),
        "ok",
        "system_explain",
        "beauty",
    )
    assert (
        generation_prompt(ex)
        == "category: beauty\nneeds: skin: dry\nask about: none\nitem: skin: dry\nuser: hi\nassistant:"
    )


def test_generator_full_finetune_lowers_loss(small_train, tmp_path: Path):
    data = small_train.generation[:8]
    model, tok = tiny_causal_lm(0)
    cfg = GeneratorConfig(
        max_steps=20,
        batch_size=4,
        learning_rate=3e-3,
        use_lora=False,
        device="cpu",
        max_length=96,
        max_new_tokens=4,
        max_turns=1,
    )
    gen = ResponseGenerator(cfg, model=model, tokenizer=tok)
    hist = gen.fit(data)
    assert hist.mean_loss(False) < 0.8 * hist.mean_loss(True)
    out = gen.generate(data[:2])
    assert len(out) == 2 and all(isinstance(x, str) for x in out)
    gen.save(tmp_path / "gen")
    assert ResponseGenerator.load(tmp_path / "gen", device="cpu").generate(data[:2]) == out


def test_generator_lora_trains_only_the_adapter(small_train):
    data = small_train.generation[:8]
    model, tok = tiny_causal_lm(1)
    frozen = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    cfg = GeneratorConfig(
        max_steps=8, batch_size=4, learning_rate=1e-2, device="cpu", max_length=96, max_turns=1
    )
    gen = ResponseGenerator(cfg, model=model, tokenizer=tok)
    hist = gen.fit(data)
    assert hist.mean_loss(False) < hist.mean_loss(True)
    trainable = [n for n, p in gen.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert torch.equal(gen.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, frozen)


# --- task 5 ----------------------------------------------------------------------------------


def test_ruber_scorer_prefers_on_topic_responses():
    ctx = [("user", "dry skin toner please")]
    exs = [
        EvaluationExample(ctx, "this toner suits dry skin", 4.5),
        EvaluationExample(ctx, "sure", 2.0),
        EvaluationExample(ctx, "a phone", 1.0),
    ]
    scores = RuberScorer(HashingEncoder(256)).predict(exs)
    assert scores[0] > scores[1] and scores[0] > scores[2]


def test_quality_regressor_lowers_loss_and_round_trips(small_train, tmp_path: Path):
    data = small_train.evaluation[:16]
    model, tok = enc(4)
    reg = QualityRegressor(
        QualityConfig(max_steps=30, batch_size=8, learning_rate=2e-3, device="cpu", max_length=64),
        model=model,
        tokenizer=tok,
    )
    hist = reg.fit(data)
    assert hist.mean_loss(False) < 0.75 * hist.mean_loss(True)
    assert reg.evaluate(data)["pearson"] > 0.5  # fits its training set
    reg.save(tmp_path / "q")
    again = QualityRegressor.load(tmp_path / "q", device="cpu")
    assert again.predict(data) == pytest.approx(reg.predict(data), abs=1e-4)


# --- checkpoints and configs ------------------------------------------------------------------


def test_checkpoint_version_and_task_are_checked(small_train, tmp_path: Path):
    model, tok = enc(5)
    reg = QualityRegressor(
        QualityConfig(max_steps=1, batch_size=4, device="cpu", max_length=32), model=model, tokenizer=tok
    )
    reg.fit(small_train.evaluation[:4])
    reg.save(tmp_path / "q")
    with pytest.raises(UnknownLabelError, match="for task 'evaluation', not 'elicitation'"):
        AttributeClassifier.load(tmp_path / "q")
    info = read_json(tmp_path / "q" / "crs.json")
    info["format_version"] = 99
    write_json(tmp_path / "q" / "crs.json", info)
    with pytest.raises(SchemaVersionError, match="format 99"):
        QualityRegressor.load(tmp_path / "q")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ElicitationConfig(threshold=1.0), "threshold"),
        (lambda: ElicitationConfig(pooling="max"), "pooling"),
        (lambda: RankerConfig(temperature=0), "temperature"),
        (lambda: GeneratorConfig(lora_r=0), "lora_r"),
        (lambda: QualityConfig(max_turns=0), "max_turns"),
        (lambda: QualityConfig(learning_rate=-1), "learning_rate"),
        (lambda: QualityConfig(max_steps=-1), "max_steps"),
    ],
)
def test_config_errors(factory, message):
    with pytest.raises(CrsConfigError, match=message):
        factory()


def test_accelerate_path_updates_the_weights(small_train):
    model, tok = enc(6)
    reg = QualityRegressor(
        QualityConfig(max_steps=3, batch_size=4, device="cpu", max_length=32, use_accelerate=True),
        model=model,
        tokenizer=tok,
    )
    reg._build()
    before = reg.net.head.weight.detach().clone()
    hist = reg.fit(small_train.evaluation[:8])
    assert hist.steps == 3 and all(loss == loss for loss in hist.losses)
    assert not torch.equal(before, reg.net.head.weight.detach())
