import json

import pytest

from zjulab.conifer import ConiferConfigError, ContaminationGuard, Pipeline, PipelineConfig, load_seeds

from .fakes import FakeModel, weak_reply

EVAL = [
    "Write a 300+ word summary of the wikipedia page about the history of the city of Tripoli.",
    "Write a poem about a lonely robot who learns to paint in the rain.",
]


def test_containment_by_hand():
    guard = ContaminationGuard(EVAL, n=3, threshold=0.5)
    # prompt 1 has 14 words -> 12 trigrams; the text holds 5 of them
    j, ov = guard.best_overlap("Write a poem about a lonely robot")
    assert (j, ov) == (1, pytest.approx(5 / 12))
    # the whole prompt, with nine words after it: every trigram of the prompt is there
    copied = EVAL[1] + " and make it rhyme for my little niece please"
    assert guard.best_overlap(copied) == (1, 1.0)
    # punctuation, case, full-width forms and curly quotes do not hide a copy
    assert (
        guard.best_overlap("WRITE A POEM ABOUT A LONELY ROBOT WHO LEARNS TO PAINT IN THE RAIN\uff0e")[1]
        == 1.0
    )
    hits = guard.check([copied, "Completely different text here today", "x"])
    assert [(h.index, h.prompt_index) for h in hits] == [(0, 1)]
    assert guard.best_overlap("too short") == (-1, 0.0)
    # a prompt shorter than n words is one n-gram of its own length
    short = ContaminationGuard(["Say hi."], n=5)
    assert short.best_overlap("Please say hi. now")[1] == 1.0


def test_a_verbatim_copy_with_nine_words_passed_the_old_overlap():
    # the old score divided by the candidate's n-grams: 3 shared of 12 -> 0.25, not flagged
    prompt = "Write a limerick about Hannah."
    text = prompt + " She goes to college and loves the colour blue."
    guard = ContaminationGuard([prompt])
    assert guard.best_overlap(text)[1] == 1.0 and guard.check([text])


def test_ifeval_prompts_and_their_copies_are_caught(ifeval_path):
    prompts = [json.loads(x)["prompt"] for x in ifeval_path.read_text().splitlines()]
    guard = ContaminationGuard(prompts)
    assert len(guard.check(prompts)) == len(prompts)
    extended = [p + " and keep it short since it is for my team." for p in prompts[::7]]
    assert len(guard.check(extended)) == len(extended)
    assert guard.check(["How do I keep a sourdough starter alive through a long summer holiday away?"]) == []


def test_pipeline_drops_contaminated_instructions_and_reports_them(tmp_path):
    prompts = tmp_path / "eval.jsonl"
    # the six instructions "L<i>: Q<j> on <seed>?" of the first seed contain this prompt
    prompts.write_text(json.dumps({"prompt": "How do I keep a sourdough starter alive?"}) + "\n")
    cfg = PipelineConfig(
        mode="verifiable",
        out_dir=str(tmp_path / "run"),
        num_reframes=2,
        num_levels=3,
        few_shot=False,
        contamination_prompts=str(prompts),
    )
    seeds = ["How do I keep a sourdough starter alive?", "Explain photosynthesis to a child please"]
    res = Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(load_seeds(seeds))
    st = {s.name: s for s in res.stats}
    assert st["contamination"].contaminated == 6 and st["contamination"].filtered == 6
    assert not any("sourdough" in r["instruction"] for r in res.records)
    assert len(res.records) == 12 - 6
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["contaminated"] == 6
    flagged = Pipeline(
        FakeModel(), FakeModel(weak_reply), PipelineConfig(**{**cfg.__dict__, "contamination_action": "flag"})
    ).run(load_seeds(seeds))
    assert sum("contamination" in r for r in flagged.records) == 6 and len(flagged.records) == 12


def test_bad_settings():
    with pytest.raises(ConiferConfigError, match="n must"):
        ContaminationGuard(EVAL, n=0)
    with pytest.raises(ConiferConfigError, match="threshold"):
        ContaminationGuard(EVAL, threshold=1.5)
    with pytest.raises(ConiferConfigError, match="at least one"):
        ContaminationGuard([])
    # a bool is not an n-gram length, a string not a threshold (was a raw TypeError), a
    # bare string is not a list of prompts (was one prompt per character)
    with pytest.raises(ConiferConfigError, match="n must"):
        ContaminationGuard(EVAL, n=True)
    with pytest.raises(ConiferConfigError, match="threshold must be a number"):
        ContaminationGuard(EVAL, threshold="0.3")
    with pytest.raises(ConiferConfigError, match="list of prompt texts"):
        ContaminationGuard("Write a limerick about Hannah.")
    with pytest.raises(ConiferConfigError, match="prompt 1 is a int"):
        ContaminationGuard(["Write a poem.", 3])
    with pytest.raises(ConiferConfigError, match="contamination_n"):
        PipelineConfig(contamination_n=True)
    with pytest.raises(ConiferConfigError, match="contamination_action"):
        PipelineConfig(contamination_action="delete")
