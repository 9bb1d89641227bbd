"""Attribution on the shapes users' pipelines have: wrappers that mutate state, lists of step
outputs, documents as dicts."""

from __future__ import annotations

import re

from zjulab.memtrace import EvidenceJudge, Gold, Tracer, attribute, replay

EVIDENCE = "Nora: I adopted a rescue dog and named her Biscuit"
GOLD = Gold("Biscuit", (EVIDENCE,), "What did Nora name her dog?")
SESSIONS = [
    ["Nora: I finished the pottery course at the centre", "Sam: I went hiking near the lake"],
    ["Sam: what is new with you", EVIDENCE, "Sam: I started volunteering at the food bank"],
]


def _words(text):
    return {w.lower() for w in re.findall(r"\w+", text)} - {
        "i",
        "a",
        "the",
        "and",
        "her",
        "at",
        "what",
        "did",
    }


def _read(question, texts):
    best = max(texts, key=lambda t: len(_words(question) & _words(t)), default="")
    return best if _words(question) & _words(best) else "I don't know"


def _mem0(drop_session=None):
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages, session):
        out = []
        for m in messages:
            if session == drop_session and m == EVIDENCE:
                continue
            speaker, text = m.split(": ", 1)
            out.append(text.replace("I ", f"{speaker} ", 1))  # a third-person rewrite
        return out

    @tracer.operation("update", outputs=("events",))
    def update(store, facts):
        for f in facts:
            store[f"m{len(store)}"] = f  # the store changes in place
        return [["ADD", k] for k in store]

    @tracer.operation("add")
    def add(store, messages, session):  # Mem0's memory.add: extract + update inside
        return update(store, extract(messages, session))

    @tracer.operation("search", kind="retrieve", outputs=("memories",))
    def search(store, query):
        return sorted(store.values(), key=lambda t: -len(_words(query) & _words(t)))[:2]

    @tracer.operation("answer", outputs=("answer",))
    def answer(question, memories):
        return _read(question, memories)

    @tracer.operation("chat_session", kind="session")
    def chat_session(sessions, question):
        store = {}
        for i, s in enumerate(sessions):
            add(store, s, i)
        return answer(question, search(store, question))

    with tracer.trace("mem0") as trace:
        chat_session([list(s) for s in SESSIONS], GOLD.question)
    return trace


def test_a_wrapper_that_mutates_state_through_a_nested_step_leaves_the_blame_inside():
    assert GOLD.is_correct(_mem0().final_value)
    trace = _mem0(drop_session=1)
    assert not GOLD.is_correct(trace.final_value)
    search = trace.find_operations("search")[0]
    store_var = next(v for v in search.inputs if trace.variables[v].name == "store")
    # the store search read was written by the nested update, not by the add wrapper
    assert trace.operations[trace.variables[store_var].producer].name == "update"
    att = attribute(trace, GOLD, EvidenceJudge())
    assert [d.label for d in att.decisive] == ["extract#1"] and att.verified
    assert att.modes == ["information_loss"]


def _rag(drop=False, near_miss=False):
    tracer = Tracer()

    @tracer.operation("chunk", kind="split", outputs=("chunks",))
    def chunk(messages):
        return [messages[i : i + 2] for i in range(0, len(messages), 2)]

    @tracer.operation("summarise", outputs=("summary",))
    def summarise(turns, session):
        parts = [t.split(": ", 1) for t in turns if not (drop and t == EVIDENCE)]
        return " ".join(text.replace("I ", f"{who} ", 1) + "." for who, text in parts)  # third person

    @tracer.operation("index", outputs=("index",))
    def index(docs, summaries, session):
        return [*docs, *({"id": f"s{session}c{i}", "text": s} for i, s in enumerate(summaries))]

    @tracer.operation("retrieve", outputs=("documents",))
    def retrieve(docs, query):
        ranked = sorted(docs, key=lambda d: -len(_words(query) & _words(d["text"])))
        if near_miss:
            ranked = [d for d in ranked if "Biscuit" not in d["text"]]
        return ranked[:1]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, documents):
        return _read(question, [s for d in documents for s in d["text"].split(". ")])

    with tracer.trace("rag") as trace:
        docs = []
        for i, s in enumerate(SESSIONS):
            docs = index(docs, [summarise(c, i) for c in chunk(list(s))], i)  # a list of step outputs
        generate(GOLD.question, retrieve(docs, GOLD.question))
    return trace


def test_a_list_of_step_outputs_links_each_and_replay_rebuilds_it():
    assert GOLD.is_correct(_rag().final_value)
    trace = _rag(drop=True)
    faulty = next(
        op for op in trace.find_operations("summarise") if EVIDENCE in trace.variables[op.args[0].var].value
    )
    index1 = trace.find_operations("index")[1]
    assert faulty.outputs[0] in index1.inputs  # linked through the list comprehension
    # replaying a corrected summary rebuilds the list the index step receives
    fixed = replay(trace, {faulty.id: "Nora adopted a rescue dog and named her Biscuit."})
    assert GOLD.is_correct(fixed.final)
    att = attribute(trace, GOLD, EvidenceJudge())
    # only the summary that received the evidence is blamed, not its siblings of the session
    assert att.decisive_ops == [faulty.id] and att.verified


def test_retrieval_of_documents_as_dicts_is_verified_by_replay():
    trace = _rag(near_miss=True)
    att = attribute(trace, GOLD, EvidenceJudge())
    assert [d.label for d in att.decisive] == ["retrieve#0"] and att.verified
    assert att.replays[-1].rescued and "Biscuit" in att.replays[-1].answer
