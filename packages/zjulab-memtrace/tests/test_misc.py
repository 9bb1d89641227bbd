import json

import pytest
from memtrace_toy import MILO, QUESTION, record

from zjulab.common.errors import ConfigError
from zjulab.memtrace import (
    AttributionConfig,
    BenchConfig,
    EvidenceJudge,
    FailureMode,
    Gold,
    PipelineConfig,
    Taxonomy,
    TracingError,
    attribute,
)
from zjulab.memtrace.matching import answer_matches, carries, normalize_text, token_recall
from zjulab.memtrace.optimize import aggregate, evaluate_prompt_update, optimize_prompts


def test_token_recall_hand_worked():
    assert normalize_text("The Cat, named   MILO!") == "cat named milo"
    assert token_recall("a happy place", "It's my happy place.") == 1.0
    assert token_recall("psychology, counseling certification", "counseling") == pytest.approx(1 / 3)
    assert token_recall("", "anything") == 0.0
    assert answer_matches("I adopted a cat named Milo", "Milo")
    assert not answer_matches("I don't know", "Milo")
    assert not answer_matches(None, "Milo")
    assert carries(["x", "Alice: I adopted a cat named Milo"], "Alice: I adopted a cat named Milo")
    # a copy with the answer changed does not carry the evidence once the answer is given
    bad = "Alice: I adopted a cat named Zanzibar"
    assert carries([bad], MILO, 0.8) and not carries([bad], MILO, 0.8, answer="Milo")


def test_config_errors():
    with pytest.raises(ConfigError, match="max_set_size"):
        AttributionConfig(max_set_size=0)
    with pytest.raises(ConfigError, match="window"):
        AttributionConfig(window=-1)
    with pytest.raises(ConfigError, match="top_k"):
        PipelineConfig(top_k=0)
    with pytest.raises(ConfigError, match="pipelines"):
        BenchConfig(pipelines=("graphrag",))
    with pytest.raises(ConfigError, match="threshold"):
        Gold("x", threshold=0)


def test_taxonomy_is_extensible():
    tax = Taxonomy()
    assert tax.default_mode("extract") == "information_loss"
    assert tax.default_mode("rerank") == "retrieval_misalignment"
    assert tax.default_mode("teleport") == "other"
    tax.register(FailureMode("temporal_error", "a date was resolved wrongly", ("resolve_time",)))
    assert tax.default_mode("resolve_time") == "temporal_error"
    tax.map_kind("rerank", "generation_error")
    assert tax.default_mode("rerank") == "generation_error"
    assert tax.normalise("Wrong Update", "x") == "wrong_update"
    assert tax.normalise("???", "extract") == "information_loss"
    with pytest.raises(TracingError, match="already exists"):
        tax.register(FailureMode("other", "dup"))
    with pytest.raises(TracingError, match="unknown failure mode"):
        tax.map_kind("x", "nope")
    assert "temporal_error: a date" in tax.describe()


def test_aggregate_and_prompt_optimisation(scripted_chat):
    gold = Gold("Milo", (MILO,), QUESTION)
    fails = []
    for _ in range(3):
        _, trace, _ = record(garble_answer=True)
        fails.append((trace, attribute(trace, gold, EvidenceJudge())))
    _, trace, _ = record(drops={0: [MILO]})
    fails.append((trace, attribute(trace, gold, EvidenceJudge())))
    summary = aggregate([a for _, a in fails])
    assert summary.n == summary.n_failed == 4
    assert summary.by_operation == {"generate": 3, "extract": 1}
    assert summary.by_pair[("generate", "generation_error")] == 3
    assert summary.guilty() == "generate"

    model = scripted_chat(
        [json.dumps({"prompt": "Please use the memories to answer.", "reason": "ignored memories"})]
    )
    update = optimize_prompts(fails, model)
    assert update.op_name == "generate" and update.old_prompt == "Answer briefly."
    assert update.new_prompt == "Please use the memories to answer." and update.changed
    assert update.n_failures == 3
    assert "generation_error" in model.calls[0][-1]["content"]

    ev = evaluate_prompt_update([(t, gold) for t, _ in fails], update)
    # the three garbled runs are rescued by the new prompt; the dropped fact is not
    assert (ev.n, ev.correct_before, ev.correct_after, ev.errors) == (4, 0, 3, 0)
    assert ev.delta == pytest.approx(0.75)

    same = optimize_prompts(fails, scripted_chat(default="no json"))
    assert not same.changed and same.new_prompt == same.old_prompt
    with pytest.raises(TracingError, match="no prompt"):
        optimize_prompts(fails, model, op_name="extract")


def test_optimiser_skips_blamed_operations_without_a_prompt(scripted_chat):
    from zjulab.memtrace import Attribution, DecisiveError

    gold = Gold("Milo", (MILO,), QUESTION)
    _, trace, _ = record(garble_answer=True)
    gen = attribute(trace, gold, EvidenceJudge())
    ret = trace.find_operations("retrieve")[0]
    blamed = Attribution(
        True, "x", gold, decisive=[DecisiveError(ret.id, "retrieve", "retrieve#0", "retrieval_misalignment")]
    )
    fails = [(trace, gen)] + [(trace, blamed)] * 3
    assert aggregate([a for _, a in fails]).guilty() == "retrieve"
    update = optimize_prompts(fails, scripted_chat(default=json.dumps({"prompt": "Use the memories."})))
    assert update.op_name == "generate"
    with pytest.raises(TracingError, match="none of the blamed"):
        optimize_prompts([(trace, blamed)], scripted_chat(default="{}"))
