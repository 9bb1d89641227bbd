import pytest

from zjulab.conifer import ConiferConfigError, ContaminationGuard

EVAL = [
    "Write a 300+ word summary of the wikipedia page about the history of the city of Tripoli.",
    "Write a poem about a lonely robot who learns to paint in the rain.",
]


def test_overlap_by_hand():
    guard = ContaminationGuard(EVAL, n=3, threshold=0.5)
    # "write a poem about a lonely robot" -> 5 trigrams, all in prompt 1
    j, ov = guard.best_overlap("Write a poem about a lonely robot")
    assert (j, ov) == (1, 1.0)
    # 6 trigrams, 2 shared ("a lonely robot", "lonely robot who" is not; "write a poem" is)
    j, ov = guard.best_overlap("write a poem on a lonely robot today")
    assert j == 1 and ov == pytest.approx(2 / 6)
    hits = guard.check(["Write a poem about a lonely robot", "Completely different text here today", "x"])
    assert [(h.index, h.prompt_index) for h in hits] == [(0, 1)]
    assert guard.best_overlap("too short") == (-1, 0.0)


def test_ifeval_prompts_flag_themselves(ifeval_path):
    import json

    prompts = [json.loads(x)["prompt"] for x in ifeval_path.read_text().splitlines()]
    guard = ContaminationGuard(prompts, n=8, threshold=0.5)
    assert len(guard.check(prompts[:50])) == 50
    assert guard.check(["How do I keep a sourdough starter alive through a long summer holiday away?"]) == []


def test_bad_settings():
    with pytest.raises(ConiferConfigError, match="n must"):
        ContaminationGuard(EVAL, n=0)
    with pytest.raises(ConiferConfigError, match="threshold"):
        ContaminationGuard(EVAL, threshold=1.5)
