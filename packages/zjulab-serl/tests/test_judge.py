import re

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.serl import (
    CopelandJudge,
    JudgeConfig,
    SERLInputError,
    format_matrix,
    judge_prompts,
    render_judge_prompt,
    score_group,
)


def words(n, w="word"):
    return " ".join([w] * n)


def longer_answer_judge(conv):
    """Prefers the answer with more words (a scripted stand-in for a length-biased judge)."""
    text = conv[-1]["content"]
    a = re.search(r"## Answer 1\n(.*?)\n\n## Answer 2", text, re.S).group(1)
    b = re.search(r"## Answer 2\n(.*?)\n\n## Your verdict", text, re.S).group(1)
    return "\\boxed{1}" if len(a.split()) >= len(b.split()) else "\\boxed{2}"


RESPONSES = [words(10), words(11), words(12), words(30)]


def test_scripted_longer_judge_length_controlled():
    chat = ScriptedChatModel(longer_answer_judge)
    result = CopelandJudge(chat, JudgeConfig(num_judgments=2)).judge("Explain tides.", RESPONSES)
    assert len(chat.calls) == 6 * 2
    # a win counts when 0.8 * len(loser) < len(winner) < 1.2 * len(loser) (the authors' rule):
    # 2 (12 words) beats 1 (11) inside the band: (11/12) * K / ((N-1) * K); over 0 it is out (12 = 1.2 * 10)
    # 1 beats 0: (10/11) / 3; 3 beats everyone but always outside the band; 0 wins nothing
    assert result.actor_rewards.tolist() == pytest.approx([0.0, (10 / 11) / 3, (11 / 12) / 3, 0.0])
    assert result.ranking() == [2, 1, 0, 3]
    assert result.matrix.tolist() == [[0, 0, 0, 0], [2, 0, 0, 0], [2, 2, 0, 0], [2, 2, 2, 0]]
    # a consistent judge: both orders agree, no invalid verdicts, no position bias
    d = result.diagnostics
    assert d.consistency_rate == 1.0 and d.invalid_rate == 0.0 and d.position_bias == 0.0


def test_scripted_longer_judge_plain_copeland():
    cfg = JudgeConfig(num_judgments=2, actor_reward="copeland")
    result = CopelandJudge(ScriptedChatModel(longer_answer_judge), cfg).judge("q", RESPONSES)
    assert result.actor_rewards.tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    assert result.ranking() == [3, 2, 1, 0]
    # every judgment picks the longer answer, which has the higher Copeland score
    assert result.judge_rewards.tolist() == [1.0] * 12


def test_judge_many_batches_and_sampling():
    chat = ScriptedChatModel(longer_answer_judge)
    judge = CopelandJudge(chat, JudgeConfig(num_judgments=4))
    out = judge.judge_many([("a", RESPONSES[:2]), ("b", RESPONSES[:3])], temperature=0.5)
    assert [len(g.slots) for g in out] == [4, 12]
    assert len(chat.sampling) == 1 and chat.sampling[0]["temperature"] == 0.5
    assert out[1].instruction == "b"


def test_judge_prompts_strip_reasoning_and_order():
    prompts, _slots = judge_prompts("Q?", ["<think>long</think>\n\nA", "B"], JudgeConfig(num_judgments=2))
    assert "long" not in prompts[0]
    assert prompts[0].index("## Answer 1\nA") < prompts[0].index("## Answer 2\nB")
    assert "## Answer 1\nB" in prompts[1]
    kept, _ = judge_prompts("Q?", ["<think>x</think>A", "B"], JudgeConfig(strip_reasoning=False))
    assert "<think>x</think>A" in kept[0]


def test_render_keeps_braces_and_placeholder_text():
    tpl = '{"q": "{instruction}"} [{response_1}] [{response_2}]'
    out = render_judge_prompt("x", "uses {response_2} literally", "b", tpl)
    assert out == '{"q": "x"} [uses {response_2} literally] [b]'


def test_score_group_invalid_and_errors():
    g = score_group("q", [words(10), words(11)], ["\\boxed{2}", "junk"])
    assert g.verdicts == [2, None]
    assert g.judge_rewards.tolist() == [1.0, -1.0]
    assert g.diagnostics.invalid_rate == 0.5
    assert "R_A" in format_matrix(g.matrix, g.actor_rewards)
    with pytest.raises(SERLInputError, match="1 judge outputs for 2"):
        score_group("q", ["a", "b"], ["\\boxed{1}"])
    with pytest.raises(SERLInputError, match="at least 2"):
        CopelandJudge(ScriptedChatModel(default="x")).judge("q", ["only one"])
    with pytest.raises(SERLInputError, match="not str"):
        judge_prompts("q", ["a", 3])  # type: ignore[list-item]
    d = g.to_dict()
    assert d["judgments"][1]["verdict"] is None and d["ranking"] == [1, 0]


def test_an_actor_response_cut_off_in_its_reasoning_is_judged_as_empty():
    cfg = JudgeConfig(num_judgments=2)
    responses = [
        "<think>long reasoning that never ends, with many many words",
        "<think>ok</think> Tides follow the moon.",
    ]
    prompts, _ = judge_prompts("Explain tides.", responses, cfg)
    assert "never ends" not in prompts[0] and "Tides follow the moon." in prompts[0]
    assert "ok</think>" not in prompts[0]
    # its words are not counted either: a win of the empty answer earns nothing
    result = score_group("Explain tides.", responses, ["\\boxed{1}", "\\boxed{2}"], cfg)
    assert result.actor_rewards.tolist() == [0.0, 0.0]  # 0 words vs 4: outside the band
    # without stripping the response is shown as written
    raw, _ = judge_prompts("Explain tides.", responses, JudgeConfig(strip_reasoning=False))
    assert "never ends" in raw[0]
