import json
import random

import pytest
from memtrace_toy import MILO, PARIS, QUESTION, record

from zjulab.memtrace import (
    AttributionConfig,
    ChatJudge,
    EvidenceJudge,
    Gold,
    PredicateJudge,
    ReferenceJudge,
    TracingError,
    Verdict,
    attribute,
    attribute_all_at_once,
    last_operation,
    random_operation,
)

GOLD = Gold("Milo", (MILO,), QUESTION)


def labels(trace, op_ids):
    return [trace.operation_label(o) for o in op_ids]


def dropping_judge():
    """Flags every extraction that lost lines (whether or not it matters); corrects by undoing it."""

    def pred(trace, op, gold):
        if op.name != "extract":
            out = trace.variables[op.outputs[0]].value
            ok = (
                gold.is_correct(out) if op.outputs[0] == trace.final else all(e in out for e in gold.evidence)
            )
            return Verdict(op.id, not ok, "upstream")
        lost = len(trace.variables[op.outputs[0]].value) < len(trace.variables[op.inputs[0]].value)
        return Verdict(op.id, lost, "self", "information_loss", "dropped lines")

    def fix(trace, op, gold):
        return True, list(trace.variables[op.inputs[0]].value)

    return PredicateJudge(pred, name="dropping", corrector=fix)


def test_single_fault_is_found_verified_and_labelled():
    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, EvidenceJudge())
    assert att.failed and att.verified
    assert labels(trace, att.decisive_ops) == ["extract#0"]
    assert att.modes == ["information_loss"]
    # the descent: generate+retrieve, then the updates/extract#1, then extract#0
    assert [labels(trace, r) for r in att.rounds] == [
        ["retrieve#0", "generate#0"],
        ["update#0", "extract#1", "update#1"],
        ["extract#0"],
    ]
    assert [(labels(trace, r.op_ids), r.rescued) for r in att.replays] == [(["extract#0"], True)]
    assert att.replays[0].answer == "I adopted a cat named Milo"


def test_two_independent_faults_need_both():
    gold = Gold("Milo Paris", (MILO, PARIS), "cat Milo Paris", threshold=1.0)
    answer, trace, _ = record(question="cat Milo Paris", k=4, answer_all=True, drops={0: [MILO], 1: [PARIS]})
    assert not gold.is_correct(answer)
    att = attribute(trace, gold, EvidenceJudge())
    assert labels(trace, att.candidates) == ["extract#0", "extract#1"]
    assert labels(trace, att.decisive_ops) == ["extract#0", "extract#1"]
    assert att.verified
    # singles were tried first and failed; the pair rescued
    assert [(labels(trace, r.op_ids), r.rescued) for r in att.replays] == [
        (["extract#0"], False),
        (["extract#1"], False),
        (["extract#0", "extract#1"], True),
    ]


def test_masked_fault_is_not_decisive():
    # extract#1 also loses a line, but that line does not matter for the question
    _, trace, _ = record(drops={0: [MILO], 1: ["Bob: cool, that city is lovely"]})
    att = attribute(trace, GOLD, dropping_judge())
    assert labels(trace, att.candidates) == ["extract#0", "extract#1"]
    assert labels(trace, att.decisive_ops) == ["extract#0"]
    assert att.verified


def test_upstream_and_generation_faults_together():
    _, trace, _ = record(drops={0: [MILO]}, garble_answer=True)
    att = attribute(trace, GOLD, EvidenceJudge())
    # generate lost nothing it had, so only extract#0 is a candidate; correcting it alone does
    # not rescue (generate garbles), so the search widens to the other faulty operations but
    # never to "replace the final answer with the gold one"
    assert labels(trace, att.candidates) == ["extract#0"]
    assert not any(trace.operations[o].name == "generate" for r in att.replays for o in r.op_ids)
    assert not att.verified
    assert labels(trace, att.decisive_ops) == ["extract#0"]


def test_generation_fault_alone():
    _, trace, _ = record(garble_answer=True)
    att = attribute(trace, GOLD, EvidenceJudge())
    assert labels(trace, att.decisive_ops) == ["generate#0"]
    assert att.modes == ["generation_error"]
    # correcting the answer itself means writing the gold answer: labelled, never "verified"
    assert not att.verified and len(att.rounds) == 1 and att.replays == []
    assert att.summary().endswith("[final operation: a replay cannot test it]")


def test_reference_judge_matches_the_clean_run():
    _, clean, _ = record()
    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, ReferenceJudge(clean))
    assert labels(trace, att.decisive_ops) == ["extract#0"]
    assert att.modes == ["information_loss"]
    v = att.verdicts[trace.find_operations("update")[0].id]
    assert v.faulty and v.origin == "upstream"


def test_correct_answer_has_nothing_to_attribute():
    _, trace, _ = record()
    att = attribute(trace, GOLD, EvidenceJudge())
    assert not att.failed and att.decisive == [] and att.rounds == []
    assert last_operation(trace, GOLD).decisive == []


def test_no_verify_returns_candidates():
    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, EvidenceJudge(), config=AttributionConfig(verify=False))
    assert labels(trace, att.decisive_ops) == ["extract#0"] and att.replays == [] and not att.verified


def test_missing_handles_degrade_to_unverified():
    _, trace, _ = record(drops={0: [MILO]})
    trace.handles.clear()
    att = attribute(trace, GOLD, EvidenceJudge())
    assert labels(trace, att.decisive_ops) == ["extract#0"]
    assert not att.verified


def _chat_answer(trace, name, origin="self", mode="information loss"):
    op = trace.find_operations(name)[0]
    return json.dumps({"faulty": [{"op": op.id, "origin": origin, "mode": mode, "reason": "lost the cat"}]})


def test_chat_judge_with_scripted_model(scripted_chat):
    _, trace, _ = record(drops={0: [MILO]})

    def reply(conv):
        text = conv[-1]["content"]
        ext0 = trace.find_operations("extract")[0].id
        if f"[{ext0}]" in text:
            return _chat_answer(trace, "extract", "self", "Information-Loss")
        return (
            '{"faulty": ['
            + ",".join(
                json.dumps({"op": o.id, "origin": "upstream"})
                for o in trace.operations.values()
                if f"[{o.id}]" in text and o.name != "extract"
            )
            + "]}"
        )

    model = scripted_chat(reply)
    att = attribute(trace, GOLD, ChatJudge(model))
    assert labels(trace, att.decisive_ops) == ["extract#0"]
    assert att.modes == ["information_loss"]
    assert att.verified
    assert len(model.calls) == 3  # one structured call per round
    assert "Gold answer: Milo" in model.calls[0][-1]["content"]


def test_chat_judge_garbage_degrades_gracefully(scripted_chat, caplog):
    _, trace, _ = record(drops={0: [MILO]})
    model = scripted_chat(default="I think the cat is fine, no JSON here, sorry")
    judge = ChatJudge(model)
    att = attribute(trace, GOLD, judge)
    assert att.degraded
    assert judge.unusable == 1
    # falls back to the final operation as the only candidate
    assert labels(trace, att.candidates) == ["generate#0"]
    assert "unusable" in caplog.text


def test_chat_judge_unknown_ops_and_modes_are_ignored(scripted_chat):
    _, trace, _ = record(garble_answer=True)
    gen = trace.find_operations("generate")[0]
    model = scripted_chat(
        default=json.dumps(
            {"faulty": [{"op": "op9999"}, {"op": gen.id, "origin": "self", "mode": "cosmic rays"}]}
        )
    )
    att = attribute(trace, GOLD, ChatJudge(model))
    assert labels(trace, att.decisive_ops) == ["generate#0"]
    assert att.modes == ["generation_error"]  # unknown mode -> the default for the kind


def test_all_at_once_and_baselines(scripted_chat):
    _, trace, _ = record(drops={0: [MILO]})
    ext0 = trace.find_operations("extract")[0].id
    model = scripted_chat([json.dumps({"op": ext0, "mode": "information_loss", "reason": "r"})])
    att = attribute_all_at_once(trace, GOLD, model)
    assert labels(trace, att.decisive_ops) == ["extract#0"] and not att.degraded
    assert len(model.calls) == 1
    bad = attribute_all_at_once(trace, GOLD, scripted_chat(default="no idea"))
    assert bad.degraded and labels(trace, bad.decisive_ops) == ["generate#0"]
    assert labels(trace, last_operation(trace, GOLD).decisive_ops) == ["generate#0"]
    picks = {
        labels(trace, random_operation(trace, GOLD, rng=random.Random(s)).decisive_ops)[0] for s in range(40)
    }
    assert picks == {"extract#0", "update#0", "extract#1", "update#1", "retrieve#0", "generate#0"}


def test_attribute_needs_a_final_answer():
    from zjulab.memtrace import Trace

    t = Trace()
    with pytest.raises(TracingError, match="no final"):
        attribute(t, GOLD, EvidenceJudge())
    t.final = t.add_variable("answer", "x").id
    with pytest.raises(TracingError, match="no producing"):
        attribute(t, GOLD, EvidenceJudge())


def test_attribution_dict_round_trip():
    from zjulab.memtrace import Attribution

    _, trace, _ = record(drops={0: [MILO]})
    att = attribute(trace, GOLD, EvidenceJudge())
    back = Attribution.from_dict(json.loads(json.dumps(att.to_dict())))
    assert back.decisive == att.decisive and back.rounds == att.rounds and back.verified
    assert back.gold == att.gold


def test_random_weight_chat_model_as_judge_degrades(tiny_chat_model):
    # a real transformers model with random weights answers noise: no crash, a degraded result
    _, trace, _ = record(drops={0: [MILO]})
    judge = ChatJudge(tiny_chat_model, max_retries=0, max_new_tokens=8)
    att = attribute(trace, GOLD, judge)
    assert att.failed and att.degraded
    assert judge.unusable >= 1
    assert labels(trace, att.candidates) == ["generate#0"]
