"""The pipeline: stage outputs, set-asides, filters, resume after a crash, retries, stats."""

import json

import pytest

from zjulab.conifer import (
    CheckpointError,
    ConiferConfigError,
    ConiferInputError,
    Pipeline,
    PipelineConfig,
    load_seeds,
)
from zjulab.conifer.pipeline import read_jsonl_tolerant, seed_id
from zjulab.conifer.stages import AnswerStage, FormatNumberStage, Rejection

from .fakes import FakeModel, weak_reply

SEEDS = [
    "How do I keep a sourdough starter alive?",
    "BROKEN request that the model cannot reframe",
    "How do I DROP a table safely in SQL?",
    "Explain photosynthesis to a child please",
]


def config(tmp_path, **kw):
    base = dict(
        mode="verifiable",
        out_dir=str(tmp_path / "run"),
        num_reframes=2,
        num_levels=3,
        hard_level=2,
        batch_size=2,
        max_structured_retries=1,
        few_shot=False,
        retry_backoff=0.0,
    )
    base.update(kw)
    return PipelineConfig(**base)


def run(tmp_path, strong=None, weak=None, **kw):
    strong = strong or FakeModel()
    weak = weak or FakeModel(weak_reply)
    return Pipeline(strong, weak, config(tmp_path, **kw)).run(load_seeds(SEEDS)), strong, weak


def test_full_run_counts_and_records(tmp_path):
    res, _strong, _weak = run(tmp_path)
    st = {s.name: s for s in res.stats}
    assert [s.name for s in res.stats] == [
        "seeds",
        "reframe",
        "filter_query",
        "constraints",
        "recombine",
        "filter_instruction",
        "answer",
        "internal_feedback",
        "weak_answer",
        "external_feedback",
    ]
    assert st["seeds"].outputs == 4
    # the BROKEN seed never parses: set aside, not dropped
    assert (st["reframe"].inputs, st["reframe"].outputs, st["reframe"].set_aside) == (4, 6, 1)
    # both questions about DROP are filtered by the model
    assert (st["filter_query"].outputs, st["filter_query"].filtered) == (4, 2)
    assert st["recombine"].outputs == 12  # 4 questions x 3 levels
    assert st["answer"].outputs == 12
    assert st["internal_feedback"].selected == 8  # levels 2 and 3
    assert st["weak_answer"].selected == 4  # level 3 only
    recs = res.records
    assert len(recs) == 12
    top = [r for r in recs if r["level"] == 3]
    assert all(r["weak_answer"].startswith("weak answer") and r["follows"] is False for r in top)
    assert all(r["process"] == ["audience: addressed", "format: a list"] for r in recs if r["level"] >= 2)
    assert (
        recs[0]["id"] == f"{seed_id(SEEDS[0])}-q1-L1"
        and recs[0]["instruction"] == "L1: Q1 on How do I keep a sourdough starter alive??"
    )
    assert recs[0]["answer"].startswith("Answer to <L1: Q1")


def test_set_aside_file_has_reason_and_raw(tmp_path):
    res, strong, _ = run(tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "run" / "02_reframe.setaside.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert rows[0]["key"] == seed_id(SEEDS[1]) and rows[0]["stage"] == "reframe"
    assert rows[0]["state"] == "rejected"
    assert rows[0]["reason"].startswith("unparseable model output after 2 attempt(s)")
    assert rows[0]["raw"] == "Still no JSON, sorry."  # the last attempt's raw answer
    assert res.set_aside() == rows
    # the re-ask carried the failed answer and the parse error
    assert sum("BROKEN" in a for a in strong.asked) == 1  # asked once, then re-asked with the error
    assert any(a.startswith("That answer could not be used") for a in strong.asked)


def test_stats_count_tokens_and_calls(tmp_path):
    res, strong, weak = run(tmp_path)
    st = {s.name: s for s in res.stats}
    assert st["answer"].usage["calls"] == 12
    assert st["weak_answer"].usage["calls"] == 4
    assert st["seeds"].usage == {}
    total_calls = sum(s.usage.get("calls", 0) for s in res.stats if s.name != "weak_answer")
    assert total_calls == strong.usage.calls
    assert (
        sum(s.usage.get("prompt_tokens", 0) for s in res.stats)
        == strong.usage.prompt_tokens + weak.usage.prompt_tokens
    )
    saved = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert saved["answer"]["outputs"] == 12 and saved["answer"]["complete"] is True


def test_resume_after_crash_redoes_nothing_finished(tmp_path):
    clean, _, _ = run(tmp_path / "clean")
    answered = []

    def crash(conv):
        text = conv[-1]["content"]
        if text.startswith("L"):  # an answer-stage prompt
            answered.append(text)
            return len(answered) > 5  # the 6th answer crashes the process
        return False

    strong = FakeModel(fail_on=crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Pipeline(strong, FakeModel(weak_reply), config(tmp_path)).run(load_seeds(SEEDS))
    cache = tmp_path / "run" / "requests.jsonl"
    returned = strong.asked[:-1]  # the last one was asked in the batch that crashed
    # simulate a torn write of the next line
    with cache.open("a") as fh:
        fh.write('{"key": "abc", "stage": "answer", "te')
    again = FakeModel()
    res = Pipeline(again, FakeModel(weak_reply), config(tmp_path)).run(load_seeds(SEEDS))
    st = {s.name: s for s in res.stats}
    # nothing answered before the crash is asked again
    assert not set(again.asked) & set(returned)
    answer_prompts = [a for a in again.asked if a.startswith("L")]
    assert len(answer_prompts) == 12 - 4  # batches of 2: two full batches landed before the crash
    assert st["answer"].resumed == 4 and st["reframe"].resumed == 5  # 4 asks + 1 re-ask
    assert res.records == clean.records and res.complete


def test_second_run_replays_everything(tmp_path):
    first, _, _ = run(tmp_path)
    res, strong, weak = run(tmp_path, batch_size=5, max_in_flight=2)
    assert strong.asked == [] and weak.asked == [] and res.records == first.records


def test_changed_settings_reissue_only_the_affected_calls(tmp_path):
    run(tmp_path)
    # one more level: recombine prompts change (so do their descendants); reframe/filter do not
    res, strong, _ = run(tmp_path, num_levels=4, hard_level=3)
    assert not any(a.startswith("Here is a request") for a in strong.asked)
    assert any("Rewrite the question" in a for a in strong.asked)
    assert len(res.records) == 16


def test_corrupt_cache_middle_line(tmp_path):
    cfg = config(tmp_path)
    run(tmp_path)
    (tmp_path / "run" / "requests.jsonl").write_text(
        '{"key": "a", "stage": "x", "text": "t"}\n{bad\n{"key": "b", "stage": "x", "text": "t"}\n'
    )
    with pytest.raises(CheckpointError, match=r"requests.jsonl:2"):
        Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(load_seeds(SEEDS))
    # JSON that is not a row (a list, a string, a text that is not a string) was an AttributeError
    # or became the text "None"/"[1]" replayed as an answer
    for bad in ("[1, 2]", '"text"', '{"key": "b", "stage": "x", "text": [1]}'):
        (tmp_path / "run" / "requests.jsonl").write_text(
            f'{{"key": "a", "stage": "x", "text": "t"}}\n{bad}\n'
        )
        with pytest.raises(CheckpointError, match=r"requests.jsonl:2"):
            Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(load_seeds(SEEDS))


@pytest.mark.parametrize("text", ["纸上得来终觉浅，绝知此事要躬行。", "Crème brûlée für Zoë"])
def test_torn_lines_at_every_offset_keep_every_row(tmp_path, text):
    rows = [{"key": f"k{i}", "stage": "answer", "text": f"{text} {i}"} for i in range(20)]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    torn = (json.dumps({"key": "k20", "stage": "answer", "text": text}, ensure_ascii=False) + "\n").encode()
    path = tmp_path / "c.jsonl"
    for cut in range(len(torn)):  # every offset, including a complete line without its newline
        path.write_bytes(body.encode() + torn[:cut])
        assert read_jsonl_tolerant(path) == rows
        assert path.read_bytes() == body.encode()
        # a second and a third resume: still every row, and appending still works
        assert read_jsonl_tolerant(path) == rows
        with path.open("ab") as fh:
            fh.write(torn)
        assert read_jsonl_tolerant(path)[-1]["key"] == "k20"
        assert len(read_jsonl_tolerant(path)) == 21


def test_concurrency_gives_the_same_records(tmp_path):
    a, _, _ = run(tmp_path / "a", max_in_flight=1)
    b, _, _ = run(tmp_path / "b", max_in_flight=4, batch_size=1)
    assert a.records == b.records


def test_remote_errors_are_retried_then_set_aside(tmp_path):
    res, _strong, _ = run(tmp_path, strong=FakeModel(remote_failures=1))
    assert len(res.records) == 12  # one failure, retried
    res2, _, _ = run(tmp_path / "dead", strong=FakeModel(remote_failures=10**6), max_remote_retries=1)
    rows = res2.set_aside()
    assert len(rows) == 4 and all("RemoteModelError" in r["reason"] for r in rows)
    assert all(r["state"] == "failed" for r in rows)
    assert res2.records == [] and not res2.complete
    # the server is back: the failed requests are asked again and the run completes
    res3, _, _ = run(tmp_path / "dead")
    assert res3.complete and len(res3.records) == 12


def test_seed_filters_and_loading(tmp_path):
    seeds = load_seeds(
        [
            "short",
            "Wie pflege ich einen Sauerteig am besten?",
            "How do I keep a starter alive?",
            "how do I keep a  starter alive?",
        ]
    )
    assert len(seeds) == 3  # duplicate (case/space) removed
    assert [s["id"] for s in seeds] == [seed_id(s["seed"]) for s in seeds]
    assert load_seeds(["How do I keep a starter alive?"])[0]["id"] == seeds[2]["id"]  # not positional
    _res, _, _ = run(tmp_path, num_reframes=1)
    p = Pipeline(FakeModel(), FakeModel(weak_reply), config(tmp_path / "x", num_reframes=1))
    out = p.run(seeds)
    reasons = {r["key"]: r["reason"] for r in out.set_aside() if r["stage"] == "seeds"}
    assert reasons[seeds[0]["id"]].startswith("seed length 5")
    assert reasons[seeds[1]["id"]] == "seed language 'de' not in ['en']"
    f = tmp_path / "seeds.jsonl"
    f.write_text('{"query": "a b c d e f g h"}\n{"text": "x"}\n')
    with pytest.raises(ConiferInputError, match=r"seeds.jsonl:2.*'query'"):
        load_seeds(f)
    with pytest.raises(ConiferInputError, match="no seed"):
        load_seeds([])


def test_weak_stage_needs_weak_model_and_unique_names(tmp_path):
    from zjulab.conifer.stages import WeakAnswerStage

    with pytest.raises(ConiferConfigError, match="weak model"):
        Pipeline(FakeModel(), None, config(tmp_path), stages=[WeakAnswerStage()])
    with pytest.raises(ConiferConfigError, match="unique"):
        Pipeline(FakeModel(), None, config(tmp_path), stages=[AnswerStage(), AnswerStage()])
    p = Pipeline(FakeModel(), None, config(tmp_path))
    assert "weak_answer" not in [s.name for s in p.stages]


def test_format_number_variants_are_verified(tmp_path):
    stage = FormatNumberStage(count=2, seed=3)
    rec = {"id": "x-L1", "instruction": "Explain tides.", "kind": "general", "level": 1, "checks": []}
    same, variant = stage.process(rec)
    assert same is rec and variant["id"] == "x-L1-fn" and len(variant["checks"]) == 2
    assert stage.process(rec)[1] == variant  # deterministic (resume-safe)
    assert variant["instruction"].startswith("Explain tides. The answer must follow these constraints: ")
    ans = AnswerStage()
    var = dict(variant, checks=[{"id": "punctuation:no_comma", "kwargs": {}}])
    assert ans.apply(var, "No commas here")[0]["answer"] == "No commas here"
    with pytest.raises(Rejection, match=r"punctuation:no_comma"):
        ans.apply(var, "Commas, here")
    res, _, _ = run(tmp_path, format_number=True)
    assert len([r for r in res.records if r["kind"] == "format_number"]) + len(res.set_aside()) >= 12


def test_config_validation(tmp_path):
    with pytest.raises(ConiferConfigError, match="num_levels"):
        PipelineConfig(num_levels=0)
    with pytest.raises(ConiferConfigError, match="hard_level=6 > num_levels=5"):
        PipelineConfig(hard_level=6)
    with pytest.raises(ConiferConfigError, match="unknown config key"):
        PipelineConfig.from_dict({"levels": 3})
    with pytest.raises(ConiferConfigError, match=r"strong_model\.kind"):
        PipelineConfig(strong_model={"kind": "magic"})
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"out_dir": "out", "num_levels": 3, "hard_level": 2}))
    cfg = PipelineConfig.load(path)
    assert cfg.out_dir == str(tmp_path / "out") and cfg.num_levels == 3


def test_constraint_shapes_are_normalised():
    from zjulab.conifer.stages import normalize_categories

    notes = []
    assert normalize_categories(
        {
            "Audience": ["kids", ""],
            "Format": "a list; a table",
            "Length": "under 1,000 words, one page",
            "Empty": [],
        },
        notes,
    ) == {
        "Audience": ["kids"],
        "Format": ["a list", "a table"],
        "Length": ["under 1,000 words", "one page"],  # a comma inside a number does not split
    }
    assert "categories without options left out: ['Empty']" in notes
    assert normalize_categories([{"name": "Tone", "options": ["formal"]}, "Length: short, long"]) == {
        "Tone": ["formal"],
        "Length": ["short", "long"],
    }
    # a bare name is a category without options: left out, and said so; an item of another
    # type, or options that are not text, are refused, not dropped unseen
    notes = []
    assert normalize_categories([{"name": "Tone", "options": ["formal"]}, "junk"], notes) == {
        "Tone": ["formal"]
    }
    assert notes == ["categories without options left out: ['junk']"]
    with pytest.raises(ValueError, match="category item 7"):
        normalize_categories([{"name": "Tone", "options": ["formal"]}, 7])
    with pytest.raises(ValueError, match="categories must be an object or a list"):
        normalize_categories("nothing")
    with pytest.raises(ValueError, match="option null is not text"):
        normalize_categories({"Tone": ["formal", None]})
    # a nested object (subcategory -> options) gives one category per subcategory
    assert normalize_categories({"Style": {"tone": ["fun"], "voice": "first person; third person"}}) == {
        "Style: tone": ["fun"],
        "Style: voice": ["first person", "third person"],
    }


def test_recombine_min_levels():
    from zjulab.conifer.stages import Levels, RecombineStage

    rec = {"id": "x", "query": "q", "constraints": {"A": ["b"]}}
    strict = RecombineStage(3)
    with pytest.raises(Rejection, match="expected 3 non-empty levels, got 2"):
        strict.apply(rec, Levels(["one", "two", " "]))
    lenient = RecombineStage(3, min_levels=2)
    out = lenient.apply(rec, Levels(["one", "two"]))
    assert [(r["id"], r["level"]) for r in out] == [("x-L1", 1), ("x-L2", 2)]
    with pytest.raises(Rejection, match="expected 2-3 non-empty levels, got 1"):
        lenient.apply(rec, Levels(["one"]))


def test_constraint_stage_accepts_a_list_of_categories():
    from zjulab.conifer.stages import Categories, ConstraintStage

    st = ConstraintStage(max_categories=2)
    out = st.apply(
        {"id": "x", "query": "q"}, Categories(["Tone: formal, casual", "Length: short", "Audience: kids"])
    )
    # max_categories is what the prompt asks for; what the model gave is kept as written
    assert out[0]["constraints"] == {"Tone": ["formal", "casual"], "Length": ["short"], "Audience": ["kids"]}
    with pytest.raises(Rejection, match="no constraint category"):
        st.apply({"id": "x", "query": "q"}, Categories(["junk"]))
    with pytest.raises(Rejection, match="no constraint category"):
        st.apply({"id": "x", "query": "q"}, Categories({}))


def test_every_category_the_model_wrote_reaches_the_recombination():
    # The authors pass every category to the recombination (their samples hold 6 to 8 per
    # question; their prompt's example 12). Categories beyond max_categories used to be cut.
    from zjulab.conifer.stages import Categories, ConstraintStage, RecombineStage

    cats = {f"Kind {i}": [f"option {i}a", f"option {i}b"] for i in range(1, 9)}
    (rec,) = ConstraintStage().apply({"id": "x", "query": "q"}, Categories(cats))
    assert rec["constraints"] == cats
    prompt = RecombineStage().prompt(rec)
    assert all(f"Kind {i}:" in prompt for i in range(1, 9))


def test_each_stage_asks_for_its_own_answer_length(tmp_path):
    seen = []

    class Recording(FakeModel):
        def generate(self, conversations, **sampling):
            seen.extend((c[-1]["content"][:12], sampling["max_new_tokens"]) for c in conversations)
            return super().generate(conversations, **sampling)

    cfg = config(tmp_path, max_new_tokens=300, verdict_max_new_tokens=40, answer_max_new_tokens=900)
    Pipeline(Recording(), FakeModel(weak_reply), cfg).run(load_seeds(SEEDS[:1]))
    lengths = {}
    for head, n in seen:
        lengths.setdefault(n, set()).add(head)
    assert set(lengths) == {300, 40, 900}
    assert all(h.startswith(("Question:", "Instruction:")) for h in lengths[40])  # the two filters
    assert all(h.startswith("L") for h in lengths[900])  # answers


def test_num_levels_alone_is_a_valid_config(tmp_path):
    cfg = PipelineConfig(num_levels=3)
    assert cfg.effective_hard_level == 2
    assert PipelineConfig().effective_hard_level == 4  # levels 4 and 5 of five
    with pytest.raises(ConiferConfigError, match="hard_level=4 > num_levels=3"):
        PipelineConfig(num_levels=3, hard_level=4)


def test_non_utf8_seed_file_is_a_typed_error(tmp_path):
    f = tmp_path / "seeds.txt"
    f.write_bytes("How do I keep a starter alive?\nCr\xe8me br\xfbl\xe9e?\n".encode("latin-1"))
    with pytest.raises(ConiferInputError, match=r"seeds.txt:2: not UTF-8.*0xe8"):
        load_seeds(f)
    j = tmp_path / "seeds.jsonl"
    j.write_text('{"query": 3}\n')
    with pytest.raises(ConiferInputError, match=r"seeds.jsonl:1: 'query' must be a string"):
        load_seeds(j)


def test_seed_files_are_read_line_by_line_as_written(tmp_path):
    # a JSONL row with a raw U+2028 inside its string was cut in two by str.splitlines and
    # refused; a text file's line with one became two seeds; a BOM became part of the first seed
    q = "How do I keep a starter\u2028 alive through winter?"
    j = tmp_path / "seeds.jsonl"
    j.write_text(json.dumps({"query": q}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_seeds(j) == load_seeds([q])
    t = tmp_path / "seeds.txt"
    t.write_bytes(("\ufeff" + q + "\r\nWhat is a good first language?\r\n").encode("utf-8"))
    # two seeds, the first without the BOM
    assert load_seeds(t) == load_seeds([q, "What is a good first language?"])


def test_output_files_get_the_usual_mode(tmp_path):
    import os
    import stat

    res, _, _ = run(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("manifest.json", "stats.json", "07_answer.output.jsonl", "requests.jsonl"):
        mode = stat.S_IMODE((res.out_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_format_number_templates_are_validated_against_their_checkers():
    from zjulab.conifer import InstructionArgumentError
    from zjulab.conifer.stages import FORMAT_NUMBER_TEMPLATES, _Template

    FormatNumberStage(count=2, templates=FORMAT_NUMBER_TEMPLATES)
    bad = _Template(
        "length_constraints:number_words", "Fewer than {num_words} words.", {"num_words": ("80",)}
    )
    with pytest.raises(InstructionArgumentError, match="number_words: argument 'num_words'"):
        FormatNumberStage(
            count=1, templates=[_Template(**{**bad.__dict__, "fixed": {"relation": "less than"}})]
        )


def test_format_number_offers_what_the_authors_script_offers():
    from zjulab.conifer.stages import (
        CONIFER_FORMAT_CONSTRAINTS,
        CONIFER_NUMBER_CONSTRAINTS,
        FormatNumberRewriteStage,
    )

    # ConiferLM/Conifer 04b_recombination_format_number.py: --sample-k 6, --ratio 0.6, a list
    # of 21 format and 12 numerical constraints, and each share rounded down with int()
    sample_k, ratio = 6, 0.6
    assert (len(CONIFER_FORMAT_CONSTRAINTS), len(CONIFER_NUMBER_CONSTRAINTS)) == (21, 12)
    authors = (int(sample_k * ratio), int(sample_k * (1 - ratio)))
    assert authors == (3, 2)  # 5 offered, although the script's help calls sample_k the total
    stage = FormatNumberRewriteStage()
    assert (stage.n_format, stage.n_number) == authors
    for rid in ("a", "b", "c"):
        offered = stage.offered({"id": rid})
        assert len(set(offered)) == 5
        assert sum(c in CONIFER_FORMAT_CONSTRAINTS for c in offered) == 3
        assert sum(c in CONIFER_NUMBER_CONSTRAINTS for c in offered) == 2
    wider = FormatNumberRewriteStage(offered=10, format_ratio=0.5)
    assert (wider.n_format, wider.n_number) == (5, 5) and len(wider.offered({"id": "a"})) == 10


def test_conifer_mode_follows_the_paper(tmp_path):
    from zjulab.conifer import build_conversations
    from zjulab.conifer.stages import CONIFER_FORMAT_CONSTRAINTS, CONIFER_NUMBER_CONSTRAINTS

    strong = FakeModel()
    cfg = config(tmp_path, mode="conifer")
    p = Pipeline(strong, FakeModel(weak_reply), cfg)
    assert [s.name for s in p.stages] == [
        "seeds",
        "reframe",
        "filter_query",
        "constraints",
        "recombine",
        "format_number",
        "filter_instruction",
        "answer",
        "weak_answer",
        "external_feedback",
    ]
    res = p.run(load_seeds(SEEDS[:1]))
    fn = [r for r in res.records if r["kind"] == "format_number"]
    general = [r for r in res.records if r["kind"] == "general"]
    assert len(fn) == len(general) == 6  # 2 questions x 3 levels, each with its variant
    offered = set(CONIFER_FORMAT_CONSTRAINTS) | set(CONIFER_NUMBER_CONSTRAINTS)
    for r in fn:
        assert r["checks"] == [] and set(r["fn_constraints"]) <= offered
        assert sum(c in CONIFER_FORMAT_CONSTRAINTS for c in r["fn_constraints"]) == 3  # 0.6 of 6
        appended = r["instruction"].split("The answer must follow these constraints: ")[1]
        assert appended in r["fn_constraints"]
        assert r["process_in_answer"] is True
    # the answer to a variant was asked together with the request to explain each constraint
    fn_prompts = [a for a in strong.asked if a.startswith("Answer the instruction below")]
    assert len(fn_prompts) == 6 and all("explain briefly how you met" in a for a in fn_prompts)
    # no separate internal-feedback call; the weak model answers only general top-level ones
    assert not any("Go through the requirements" in a for a in strong.asked)
    assert {r["id"] for r in res.records if "weak_answer" in r} == {
        r["id"] for r in general if r["level"] == 3
    }
    convs = build_conversations(res.records, "easy_to_hard")
    ladders = [c for c in convs if len(c) == 6]
    assert len(ladders) == 2 and not any("constraints:" in m["content"] for c in ladders for m in c)
    internal = [c for c in convs if len(c) == 2]
    assert len(internal) == 6 and all(c[0]["content"] == r["instruction"] for c, r in zip(internal, fn))


def test_mode_is_validated():
    with pytest.raises(ConiferConfigError, match="mode must be 'conifer' or 'verifiable'"):
        PipelineConfig(mode="paper")
    assert (
        PipelineConfig().format_number_enabled and not PipelineConfig(mode="verifiable").format_number_enabled
    )


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("few_shot", "false", "few_shot must be true or false"),
        ("temperature", "0.2", "temperature must be a number"),
        ("languages", "en", "languages must be a list"),
        ("format_number", 1, "format_number must be true, false or null"),
        ("seed", 1.5, "seed must be an integer"),
        ("strong_model", "gpt-4o", "strong_model must be an object"),
        ("max_in_flight", 0, "max_in_flight must be a positive integer"),
        # huge values are refused at once (a billion levels used to hang building the example)
        ("num_levels", 10**9, "num_levels must be at most 20"),
        ("num_reframes", 10**8, "num_reframes must be at most 50"),
        ("max_categories", 10**6, "max_categories must be at most 50"),
    ],
)
def test_config_values_are_taken_as_written_or_refused(key, value, match):
    with pytest.raises(ConiferConfigError, match=match):
        PipelineConfig.from_dict({key: value})


def test_out_dir_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "responses.jsonl").write_text("mine\n")
    with pytest.raises(CheckpointError, match="not a zjulab-conifer run"):
        run(tmp_path)
    assert (tmp_path / "run" / "responses.jsonl").read_text() == "mine\n"


def test_a_rejected_parsed_answer_keeps_the_model_text(tmp_path):
    class TwoLevels(FakeModel):
        def __init__(self):
            super().__init__()
            base = self.reply
            self.reply = lambda c: (
                '{"levels": ["only one", "and two"]}'
                if "Rewrite the question" in c[-1]["content"]
                else base(c)
            )

    res, _, _ = run(tmp_path, strong=TwoLevels())
    rows = [r for r in res.set_aside() if r["stage"] == "recombine"]
    assert rows and all(r["reason"] == "expected 3 non-empty levels, got 2" for r in rows)
    assert all(r["raw"] == '{"levels": ["only one", "and two"]}' for r in rows)  # the text, not a repr


@pytest.mark.parametrize(
    "seeds",
    [
        [
            "我的罗勒总是枯死，我做错了什么？",
            "如何在两周内保持酸面团酵头的活力？",
            "请给孩子解释一下光合作用",
        ],
        ["Comment réussir une crème brûlée à la maison ?", "Wie pflege ich einen Sauerteig richtig?"],
    ],
)
def test_non_ascii_run_killed_twice_resumes_every_row(tmp_path, seeds):
    clean = Pipeline(FakeModel(), FakeModel(weak_reply), config(tmp_path / "clean", languages=[])).run(
        load_seeds(seeds)
    )
    cache = tmp_path / "run" / "requests.jsonl"
    for crash_after in (4, 9):  # two crashes, each followed by a torn write
        count = []

        def crash(conv, count=count, crash_after=crash_after):
            count.append(1)
            return len(count) > crash_after

        with pytest.raises(RuntimeError, match="simulated crash"):
            Pipeline(FakeModel(fail_on=crash), FakeModel(weak_reply), config(tmp_path, languages=[])).run(
                load_seeds(seeds)
            )
        lines = cache.read_bytes().splitlines(keepends=True)
        with cache.open("ab") as fh:
            fh.write(lines[-1][: len(lines[-1]) // 2])  # half of a multi-byte line
    again = FakeModel()
    res = Pipeline(again, FakeModel(weak_reply), config(tmp_path, languages=[])).run(load_seeds(seeds))
    assert res.complete and res.records == clean.records
    again2 = FakeModel()
    res2 = Pipeline(again2, FakeModel(weak_reply), config(tmp_path, languages=[])).run(load_seeds(seeds))
    assert again2.asked == [] and res2.records == clean.records


def test_failed_requests_are_retried_up_to_the_cap_then_reported(tmp_path):
    def attempt(**kw):
        strong = FakeModel(remote_failures=10**6, remote_status=400)  # refused, not unavailable
        res = Pipeline(
            strong, FakeModel(weak_reply), config(tmp_path, max_remote_retries=0, batch_size=1, **kw)
        ).run(load_seeds(SEEDS))
        return res, strong.remote_failures

    n0 = 10**6
    for _ in range(2):  # max_request_failures=2: two runs ask the 4 reframe requests
        res, left = attempt(max_request_failures=2)
        assert n0 - left == 4 and res.failed == 4 and not res.complete
    res, left = attempt(max_request_failures=2)  # the third run does not ask them: abandoned
    st = {s.name: s for s in res.stats}
    assert n0 - left == 0 and st["reframe"].abandoned == 4 and not res.complete
    assert {r["state"] for r in res.set_aside() if r["stage"] == "reframe"} == {"abandoned"}
    strong = FakeModel()
    res = Pipeline(strong, FakeModel(weak_reply), config(tmp_path, max_request_failures=2)).run(
        load_seeds(SEEDS), retry_abandoned=True
    )
    assert res.complete and len(res.records) == 12


def test_an_outage_longer_than_the_cap_is_asked_again_when_the_server_is_back(tmp_path):
    for _ in range(4):  # the server is unavailable (503) for more runs than max_request_failures
        strong = FakeModel(remote_failures=10**6, remote_status=503)
        res = Pipeline(
            strong, FakeModel(weak_reply), config(tmp_path, max_remote_retries=0, max_request_failures=2)
        ).run(load_seeds(SEEDS))
        assert res.records == [] and res.failed == 4 and not res.complete
        assert {r["state"] for r in res.set_aside()} == {"failed"}  # never "abandoned"
    strong = FakeModel()
    res = Pipeline(strong, FakeModel(weak_reply), config(tmp_path, max_request_failures=2)).run(
        load_seeds(SEEDS)
    )
    assert res.complete and len(res.records) == 12 and len(strong.asked) > 0


class _PartlyFailingBatchModel(FakeModel):
    """A batch client that, like OpenAIChatModel, raises with ``.results``/``.failed`` when some
    conversations of a batch got no answer; the conversations matching ``bad`` fail ``times`` calls."""

    def __init__(self, bad, times):
        super().__init__()
        self.bad = bad
        self.times = times

    def generate(self, conversations, **sampling):
        from zjulab.common.chat import ChatResult
        from zjulab.common.errors import RemoteModelError

        results, failed = [], []
        for j, conv in enumerate(conversations):
            with self._lock:
                self.asked.append(conv[-1]["content"])
                fail = self.bad(conv) and self.times > 0
            if fail:
                failed.append(j)
                results.append(ChatResult(error=RemoteModelError("HTTP 500")))
            else:
                results.append(ChatResult(text=self.reply(conv), finish_reason="stop"))
        if failed:
            with self._lock:
                self.times -= 1
            exc = RemoteModelError(f"{len(failed)} of {len(conversations)} conversation(s) got no answer")
            exc.results, exc.failed = results, failed
            raise exc
        return [r.text for r in results]


def test_a_partly_failed_batch_resends_only_the_failed_conversations(tmp_path):
    strong = _PartlyFailingBatchModel(lambda c: "sourdough" in c[-1]["content"], times=1)
    res, _, _ = run(tmp_path, strong=strong, batch_size=4)
    assert res.complete and len(res.records) == 12
    asked = strong.asked
    # every prompt was asked once, except the one that failed once and was asked again
    repeated = {p for p in asked if asked.count(p) > 1}
    assert len(repeated) == 1 and "sourdough" in next(iter(repeated))
    assert asked.count(next(iter(repeated))) == 2


def test_cut_off_members_keep_only_what_arrived_whole():
    from zjulab.conifer.stages import ConstraintStage, RecombineStage, ReframeStage, cut_off_members

    raw = '{"questions": ["How do I keep a starter alive?", "What kills a starter?", "What are'
    cut = cut_off_members(raw)
    assert cut.cut == "questions" and cut.members == {
        "questions": ["How do I keep a starter alive?", "What kills a starter?"]
    }
    assert cut_off_members('{"questions": ["a"]}') is None  # complete: nothing to salvage
    assert cut_off_members("no json here") is None
    assert ReframeStage().salvage('{"questions": ["Fine?", "Cut').questions == ["Fine?"]
    assert ReframeStage().salvage('{"questions": ["Cut') is None
    assert RecombineStage(3).salvage('{"levels": ["one", "two", "thr').levels == ["one", "two"]
    # SmolLM2-135M's answer in the demo: category names in "categories", the real categories
    # beside it, a repeated key (the last counts) and a category whose options were cut
    smol = (
        '{"categories": ["Choosing a First Language", "Choosing a Programming Language"], '
        '"Audience": ["beginners", "experts"], "Format": ["a checklist", "under 100 words"], '
        '"Audience": ["experts"], "AudienceType": ["'
    )
    assert ConstraintStage().salvage(smol).categories == {
        "Format": ["a checklist", "under 100 words"],
        "Audience": ["experts"],
    }
    inner = '{"categories": {"Audience": ["kids", "adults"], "Tone": ["fun", "se'
    assert ConstraintStage().salvage(inner).categories == {"Audience": ["kids", "adults"]}


def test_salvage_cut_off_is_opt_in_and_marks_the_records(tmp_path):
    from .fakes import strong_reply

    def cut_reframe(conv):
        text = conv[-1]["content"]
        if text.startswith("Here is a request") and "BROKEN" not in text:
            full = strong_reply(conv)
            return full[: full.rindex('"', 0, len(full) - 3)]  # cut inside the last question
        return strong_reply(conv)

    strict, _, _ = run(tmp_path / "strict", strong=FakeModel(cut_reframe), max_structured_retries=0)
    assert strict.records == []
    reasons = [r["reason"] for r in strict.set_aside() if r["stage"] == "reframe"]
    assert sum("incomplete JSON" in r for r in reasons) == 3  # the fourth seed is BROKEN
    res, _, _ = run(
        tmp_path / "salvage", strong=FakeModel(cut_reframe), max_structured_retries=0, salvage_cut_off=True
    )
    # two questions asked per seed, the second cut: one whole question per seed goes on
    assert len(res.records) == 6
    # FakeModel does not say how its answers ended: the mark says that, not "token limit"
    assert all("ends inside its JSON object" in r["salvaged"]["reframe"] for r in res.records)
    assert {r["query"].split(" on ")[0] for r in res.records} == {"Q1"}


class _TruncatingModel(FakeModel):
    """A client with ``on_truncation="raise"`` whose answers to ``cut`` prompts end at the limit."""

    on_truncation = "raise"

    def __init__(self, cut):
        super().__init__()
        self.cut = cut

    def generate(self, conversations, **sampling):
        from zjulab.common.chat import ChatResult, IncompleteAnswerError

        texts = super().generate(conversations, **sampling)
        idx = [j for j, c in enumerate(conversations) if self.cut(c)]
        if idx:
            results = [
                ChatResult(text=t, finish_reason="length" if j in idx else "stop")
                for j, t in enumerate(texts)
            ]
            raise IncompleteAnswerError("cut off at the token limit", results, idx, "length")
        return texts


def test_a_refused_truncated_answer_is_set_aside_kept_and_not_asked_again(tmp_path):
    def cut(conv):
        return conv[-1]["content"].startswith("Here is a request") and "photosynthesis" in conv[-1]["content"]

    strong = _TruncatingModel(cut)
    res, _, _ = run(tmp_path, strong=strong, batch_size=4)  # used to crash the run
    assert len(res.records) == 6 and res.complete  # sourdough and DROP seeds; BROKEN never parses
    rows = [r for r in res.set_aside() if "finish_reason" in r["reason"] or "'length'" in r["reason"]]
    assert len(rows) == 1 and rows[0]["state"] == "rejected" and "photosynthesis" in rows[0]["raw"]
    again = _TruncatingModel(cut)
    res2, _, _ = run(tmp_path, strong=again, batch_size=4)
    assert again.asked == [] and res2.records == res.records and len(res2.set_aside()) == len(res.set_aside())


def test_a_directory_or_a_file_in_the_wrong_place_is_a_typed_error(tmp_path):
    from zjulab.conifer.stages import RecombineStage

    with pytest.raises(ConiferInputError, match="is a directory, not a seed file"):
        load_seeds(tmp_path)
    with pytest.raises(ConiferInputError, match=r"num_levels must be an integer in \[1, 20\]"):
        RecombineStage(10**9)
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConiferInputError, match="is a file, not a folder"):
        Pipeline(FakeModel(), None, config(tmp_path, out_dir=str(tmp_path / "afile"))).run(["How do I bake?"])
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_stage_dropped_from_the_pipeline_leaves_nothing_stale(tmp_path):
    from .fakes import strong_reply

    def bad_judge(conv):
        return "no json" if "Does the candidate answer" in conv[-1]["content"] else strong_reply(conv)

    first, _, _ = run(tmp_path, strong=FakeModel(bad_judge), max_structured_retries=0)
    assert {r["stage"] for r in first.set_aside()} == {"reframe", "external_feedback"}
    (tmp_path / "run" / "notes.txt").write_text("mine")  # a user file added since is left alone
    # the same out_dir without a weak model: no weak-answer or feedback stage any more
    second = Pipeline(FakeModel(bad_judge), None, config(tmp_path, max_structured_retries=0)).run(
        load_seeds(SEEDS)
    )
    assert {r["stage"] for r in second.set_aside()} == {"reframe"}  # used to include external_feedback
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert not [n for n in names if "weak_answer" in n or "external_feedback" in n]
    assert "notes.txt" in names and (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert [s.name for s in second.stats][-1] == "internal_feedback"
