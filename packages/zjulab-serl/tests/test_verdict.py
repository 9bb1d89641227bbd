import pytest

from zjulab.serl import parse_verdict, parse_verdicts

STRICT_CASES = [
    ("\\boxed{1}", 1),
    ("Answer 2 covers both questions. \\boxed{2}", 2),
    ("\\boxed{\\text{2}}", 2),
    ("\\boxed{\\textbf{Answer 1}}", 1),
    ("The better one: \\boxed{ 1 }.", 1),
    ("\\\\boxed{2}", 2),  # JSON-escaped backslash
    ("$\\boxed{B}$", 2),
    ("\\boxed{1} ... on reflection the second is right: \\boxed{2}", 2),  # the last box decides
    ("<think>maybe \\boxed{1}</think>\n\nFinal: \\boxed{2}", 2),  # reasoning is ignored
    ("<think>maybe \\boxed{1}</think>\n\nI cannot decide.", None),
    ("<think>still thinking \\boxed{2}", None),  # cut off inside the reasoning: no verdict
    ("\\boxed{3}", None),
    ("\\boxed{1 or 2}", None),
    ("\\boxed{}", None),
    ("\\boxed{1", None),  # unclosed
    ("Answer 1 is better.", None),  # not the requested format
    ("2", None),
    ("", None),
]

LENIENT_CASES = [
    ("Answer 1 is better.", 1),
    ("I prefer response 2 because it is concrete.", 2),
    ('{"winner": 2, "reason": "more precise"}', 2),
    ('```json\n{"preference": "Answer 1"}\n```', 1),
    ("boxed{2}", 2),
    ("[[A]]", 1),
    ("Verdict: 2", 2),
    ("Response 1 is weaker; answer 2 is clearly better", 2),  # the last statement wins
    (" 2. ", 2),
    ("1. Study in short blocks", 1),  # a leading number answers "reply with 1 or 2"
    ("(2) because it is concrete", 2),
    ("12 reasons", None),
    ("1.5 points each", None),
    ("\\boxed{3}", None),  # a box always decides, even when lenient
    ("Both are fine.", None),
    ('{"winner": true}', None),
]


@pytest.mark.parametrize("text,expected", STRICT_CASES)
def test_strict(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text,expected", LENIENT_CASES)
def test_lenient(text, expected):
    assert parse_verdict(text, lenient=True) == expected


def test_reasoning_marker_option_and_types():
    text = "<think>\\boxed{1}</think> nothing"
    assert parse_verdict(text) is None
    assert parse_verdict(text, reasoning_end=None) == 1
    assert parse_verdict(None) is None  # type: ignore[arg-type]
    assert parse_verdicts(["\\boxed{1}", "x", "\\boxed{2}"]) == [1, None, 2]


# Judge outputs in the style of reasoning models (Qwen3 thinking mode, DeepSeek-R1 templates that
# open <think> in the prompt) and of instruction models, including ones cut off by the token limit.
# (text, strict verdict, lenient verdict)
REALISTIC = [
    # --- finished reasoning (Qwen3 thinking mode)
    ("<think>\nAnswer 1 lists three causes; Answer 2 only one.\n</think>\n\n\\boxed{1}", 1, 1),
    ("<think>\nThe user asked for a haiku. Answer 2 has 5-7-5.\n</think>\n\n\\boxed{2}", 2, 2),
    (
        "<think>\nIf Answer 1 is better I output \\boxed{1}, otherwise \\boxed{2}. Answer 2 is wrong.\n</think>\n\n\\boxed{1}",
        1,
        1,
    ),
    ("<think>\nBoth are fine, slight edge to the second.\n</think>\n\nAnswer 2 is better. \\boxed{2}", 2, 2),
    ("<think>\nhmm\n</think>\n\n\\boxed{\\text{1}}", 1, 1),
    ("<think>\nhmm\n</think>\n\nAnswer 2 is better.", None, 2),
    ("<think>\nhmm\n</think>\n\n", None, None),
    ("<think>\n\n</think>\n\n\\boxed{2}", 2, 2),  # empty reasoning (thinking disabled by the template)
    ("<think>\nLet me check \\boxed{1}.\n</think>\n<think>\nWait, reconsider.\n</think>\n\n\\boxed{2}", 2, 2),
    # --- cut off inside the reasoning: never a verdict
    ("<think>\nThe instruction says \\boxed{1} if Answer 1 is better, \\boxed{2} if Answer 2 is", None, None),
    ("<think>\nAnswer 1 is better. So the answer is \\boxed{1", None, None),
    ("<think>\nI think Answer 2 is better. \\boxed{2}. But wait, let me double-check the", None, None),
    ("<think>\nAnswer 2 is better.", None, None),
    ("<think>\nFirst pass: \\boxed{1}.\n</think>\n\n\\boxed{2}\n<think>\nActually", None, None),
    # --- DeepSeek-R1 style: the template opened <think>, the output only closes it
    ("Answer 1 is accurate; Answer 2 invents a date.\n</think>\n\n\\boxed{1}", 1, 1),
    ("Comparing... \\boxed{2} seems right.\n</think>\n\nFinal verdict: \\boxed{1}", 1, 1),
    # --- instruction models without reasoning
    ("\\boxed{1}", 1, 1),
    ("\\boxed{2}", 2, 2),
    ("\\boxed{2}<|im_end|>", 2, 2),
    ("Answer 1 answers the question directly and correctly.\n\n\\boxed{1}", 1, 1),
    ("$\\boxed{2}$", 2, 2),
    ("The final answer is $\\boxed{\\textbf{2}}$.", 2, 2),
    ("\\boxed{Answer 1}", 1, 1),
    ("\\boxed{1} if Answer 1 is better, \\boxed{2} if Answer 2 is better.", 2, 2),  # echoes the prompt
    ("\\boxed{3}", None, None),
    ("\\boxed{1 and 2}", None, None),
    ("\\boxed{}", None, None),
    ("I prefer Answer 2 because it is concrete.", None, 2),
    ("Verdict: 1", None, 1),
    ('{"winner": 2}', None, 2),
    ('{"winner": "Answer 1", "reason": "clearer"}', None, 1),
    ("[[B]]", None, 2),
    ("2", None, 2),
    ("Both answers are equally good.", None, None),
    ("I cannot decide between them.", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("text,strict,lenient", REALISTIC)
def test_realistic_judge_outputs(text, strict, lenient):
    assert parse_verdict(text) == strict
    assert parse_verdict(text, lenient=True) == lenient


def test_realistic_corpus_size_and_unfinished_share():
    assert len(REALISTIC) >= 30
    assert sum(t.startswith("<think>") and "</think>" not in t for t, _, _ in REALISTIC) >= 4


def test_prompt_opened_reasoning():
    # with a template that opens <think> in the prompt, an output without </think> is unfinished
    cut = "Answer 1 looks better, so \\boxed{1} unless"
    assert parse_verdict(cut) == 1
    assert parse_verdict(cut, reasoning_opened_by_prompt=True) is None
    assert parse_verdict(cut, lenient=True, reasoning_opened_by_prompt=True) is None
    assert parse_verdict("ok\n</think>\n\\boxed{2}", reasoning_opened_by_prompt=True) == 2


def test_judge_config_reads_verdicts_after_reasoning_even_without_stripping_responses():
    from zjulab.serl import JudgeConfig

    cfg = JudgeConfig(strip_reasoning=False)
    assert cfg.parse("<think>\\boxed{1}</think>\n\\boxed{2}") == 2
    assert cfg.parse("<think>\\boxed{1}") is None
    assert JudgeConfig(reasoning_opened_by_prompt=True).parse("\\boxed{1}") is None
