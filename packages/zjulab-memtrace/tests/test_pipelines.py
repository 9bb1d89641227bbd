import pytest

from zjulab.memtrace import EvidenceJudge, Gold, ReferenceJudge, Tracer, TracingError, attribute, replay
from zjulab.memtrace.demo import DEMO_GOLD, DEMO_SESSIONS
from zjulab.memtrace.pipelines import (
    Fault,
    LongContextPipeline,
    Mem0Pipeline,
    RAGPipeline,
    corrupt_text,
    make_pipeline,
)

EV = DEMO_GOLD.evidence[0]
Q = DEMO_GOLD.question


@pytest.mark.parametrize(
    ("name", "ops"),
    [
        ("mem0", ["extract", "update", "extract", "update", "extract", "update", "retrieve", "generate"]),
        ("rag", ["chunk", "index", "chunk", "index", "chunk", "index", "retrieve", "generate"]),
        ("long_context", ["compress", "compress", "compress", "concat", "generate"]),
    ],
)
def test_clean_pipelines_answer_and_trace(hashing_encoder, name, ops):
    answer, trace = make_pipeline(name, hashing_encoder).run(DEMO_SESSIONS, Q)
    assert DEMO_GOLD.is_correct(answer), answer
    assert sorted(o.name for o in trace.operations.values()) == sorted(ops)
    assert trace.metadata["question"] == Q
    gen = trace.find_operations("generate")[0]
    assert gen.prompt.startswith("Answer the question")


@pytest.mark.parametrize(
    ("name", "fault", "label", "mode"),
    [
        ("mem0", Fault("extract", "drop", EV, 1), "extract#1", "information_loss"),
        (
            "mem0",
            Fault("extract", "corrupt", EV, 1, corrupt_text(EV, "Biscuit")),
            "extract#1",
            "incorrect_extraction",
        ),
        ("mem0", Fault("update", "overwrite", EV, 1), "update#1", "wrong_update"),
        ("mem0", Fault("retrieve", "near_miss", EV), "retrieve#0", "retrieval_misalignment"),
        ("mem0", Fault("generate", "ignore_evidence", EV), "generate#0", "generation_error"),
        ("rag", Fault("chunk", "drop", EV, 1), "chunk#1", "information_loss"),
        ("rag", Fault("retrieve", "near_miss", EV), "retrieve#0", "retrieval_misalignment"),
        ("long_context", Fault("compress", "drop", EV, 1), "compress#1", "information_loss"),
        (
            "long_context",
            Fault("compress", "corrupt", EV, 1, corrupt_text(EV, "Biscuit")),
            "compress#1",
            "incorrect_extraction",
        ),
        ("long_context", Fault("generate", "ignore_evidence", EV), "generate#0", "generation_error"),
    ],
)
def test_planted_faults_are_attributed(hashing_encoder, name, fault, label, mode):
    _, clean = make_pipeline(name, hashing_encoder).run(DEMO_SESSIONS, Q)
    answer, trace = make_pipeline(name, hashing_encoder, faults=[fault]).run(DEMO_SESSIONS, Q)
    assert not DEMO_GOLD.is_correct(answer)
    for judge in (ReferenceJudge(clean), EvidenceJudge()):
        att = attribute(trace, DEMO_GOLD, judge)
        assert [trace.operation_label(o) for o in att.decisive_ops] == [label], judge.name
        assert att.modes == [mode], judge.name
        assert att.verified == (label != "generate#0")  # the answer step alone is never "verified"


def test_replay_reuses_the_faulty_handles(hashing_encoder):
    pipe = Mem0Pipeline(hashing_encoder, faults=[Fault("generate", "ignore_evidence", EV)])
    _, trace = pipe.run(DEMO_SESSIONS, Q)
    ret = trace.find_operations("retrieve")[0]
    res = replay(trace, {ret.id: [EV]})
    assert not DEMO_GOLD.is_correct(res.final)  # generate still ignores the evidence
    assert [trace.operation_label(o) for o in res.executed] == ["generate#0"]


def test_corrupt_text_hand_worked():
    assert corrupt_text("I named her Biscuit, biscuit!", "Biscuit") == "I named her Zanzibar, Zanzibar!"
    assert corrupt_text("went to the beach", "the beach") == "went to Zanzibar Zanzibar"


def test_pipeline_errors(hashing_encoder):
    with pytest.raises(TracingError, match="unknown pipeline 'graph'"):
        make_pipeline("graph", hashing_encoder)
    pipe = LongContextPipeline(hashing_encoder, tracer=Tracer(enabled=False))
    with pytest.raises(TracingError, match="disabled"):
        pipe.run(DEMO_SESSIONS, Q)
    assert isinstance(make_pipeline("rag", hashing_encoder), RAGPipeline)


def test_chat_model_answers_in_generate(hashing_encoder, scripted_chat):
    chat = scripted_chat(default="Biscuit")
    answer, trace = Mem0Pipeline(hashing_encoder, chat=chat).run(DEMO_SESSIONS, Q)
    assert answer == "Biscuit"
    assert "Biscuit" in chat.calls[0][1]["content"]
    assert Gold("Biscuit").is_correct(trace.final_value)
