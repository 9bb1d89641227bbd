"""IFEval scoring: agreement with the reference checkers, and exact accuracies by hand."""

import json

import pytest

from zjulab.conifer import (
    ConiferInputError,
    IFEvalPrompt,
    UnknownInstructionError,
    evaluate_ifeval,
    load_ifeval,
    per_type_table,
)

from .conftest import load


def _derived(prompt):
    return [
        prompt,
        prompt.upper(),
        prompt.lower(),
        '"' + prompt + '"',
        prompt.replace(",", "") + "\nP.S. done",
        prompt + "\n\n" + prompt,
    ]


def test_agrees_with_reference_checkers_on_every_ifeval_prompt(ifeval_path):
    """540 prompts x 56 responses, strict and loose (92,960 checks): the reference results, exactly.

    The one prompt asking for the letter "#" is not recorded: the reference swaps an invalid
    letter for a random one.
    """
    ref = load("ifeval_reference_results.json")["results"]
    pool = load("response_pool.json")
    prompts = load_ifeval(ifeval_path)
    from zjulab.conifer import default_registry

    reg = default_registry()
    checked = 0
    mismatches = []
    for p in prompts:
        if str(p.key) not in ref:
            continue
        groups = ref[str(p.key)].split(" ")
        for cand, code in zip(pool + _derived(p.prompt), groups):
            for j, (iid, kw) in enumerate(zip(p.instruction_id_list, p.kwargs)):
                s = reg.check(iid, cand, kw, mode="strict", prompt=p.prompt)
                lo = reg.check(iid, cand, kw, mode="loose", prompt=p.prompt)
                checked += 2
                if (s, lo) != (code[2 * j] == "1", code[2 * j + 1] == "1"):
                    mismatches.append((p.key, iid, cand[:40]))
    assert checked == 92_960
    assert mismatches == []


PROMPTS = [
    IFEvalPrompt(
        1,
        "Write without commas and end with 'Bye.'",
        ("punctuation:no_comma", "startend:end_checker"),
        ({}, {"end_phrase": "Bye."}),
    ),
    IFEvalPrompt(
        2,
        "Answer in under 5 words.",
        ("length_constraints:number_words",),
        ({"num_words": 5, "relation": "less than"},),
    ),
    IFEvalPrompt(
        3,
        "Give a <<title>> and 2 bullets.",
        ("detectable_format:title", "detectable_format:number_bullet_lists"),
        ({}, {"num_bullets": 2}),
    ),
    IFEvalPrompt(4, "Wrap in quotes.", ("startend:quotation",), ({},)),
]
RESPONSES = {
    1: "Hello there. Bye.",  # both followed
    2: "Okay:\nyes",  # 3 words -> followed strict and loose
    3: "<<T>>\n* a\n* b\n* c",  # title yes; 3 bullets strict no, loose (drop last line) yes
    4: 'Sure:\n"quoted"',  # strict no; loose (drop first line) yes
}


def test_hand_scored_accuracies():
    res = evaluate_ifeval(RESPONSES, PROMPTS)
    # instructions: strict 1+1, 1, 1+0, 0 = 4 of 6; loose 2, 1, 2, 1 = 6 of 6
    # prompts: strict 1 and 2 = 2 of 4; loose all 4
    assert res.num_prompts == 4 and res.num_instructions == 6
    assert res.instruction_strict == pytest.approx(4 / 6)
    assert res.instruction_loose == pytest.approx(1.0)
    assert res.prompt_strict == pytest.approx(0.5)
    assert res.prompt_loose == pytest.approx(1.0)
    table = per_type_table(res)
    assert table["detectable_format:number_bullet_lists"] == {"count": 1, "strict": 0.0, "loose": 1.0}
    assert table["punctuation:no_comma"]["strict"] == 1.0


def test_response_formats_are_equivalent():
    by_prompt = {p.prompt: RESPONSES[p.key] for p in PROMPTS}
    rows = [{"prompt": p.prompt, "response": RESPONSES[p.key]} for p in PROMPTS]
    aligned = [RESPONSES[p.key] for p in PROMPTS]
    results = [evaluate_ifeval(r, PROMPTS).as_dict() for r in (by_prompt, rows, aligned)]
    assert results[0] == results[1] == results[2]


def test_errors():
    with pytest.raises(ConiferInputError, match="no response for IFEval prompt key 4"):
        evaluate_ifeval({1: "a", 2: "b", 3: "c"}, PROMPTS)
    with pytest.raises(ConiferInputError, match="3 responses for 4 prompts"):
        evaluate_ifeval(["a", "b", "c"], PROMPTS)
    with pytest.raises(UnknownInstructionError, match="made:up"):
        evaluate_ifeval(["x"], [IFEvalPrompt(9, "p", ("made:up",), ({},))])


def test_load_ifeval_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["a"], "kwargs": [{}]}) + "\n{oops\n"
    )
    with pytest.raises(ConiferInputError, match=r"bad.jsonl:2"):
        load_ifeval(bad)
    with pytest.raises(ConiferInputError, match="no such"):
        load_ifeval(tmp_path / "missing.jsonl")


def test_full_ifeval_with_prompt_echo(ifeval_path):
    prompts = load_ifeval(ifeval_path)
    res = evaluate_ifeval([p.prompt for p in prompts], ifeval_path)
    assert res.num_prompts == 541 and res.num_instructions == 834
    assert 0 < res.prompt_strict <= res.prompt_loose < 1


def test_non_string_responses_are_refused():
    prompts = [IFEvalPrompt(1, "No commas.", ("punctuation:no_comma",), ({},))]
    with pytest.raises(ConiferInputError, match="response 0 must be a string, got NoneType"):
        evaluate_ifeval([None], prompts)
    with pytest.raises(ConiferInputError, match="prompt key 1 must be a string"):
        evaluate_ifeval({"No commas.": 3}, prompts)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\xff\xfe{}\n", r"p.jsonl:1: not UTF-8"),  # was a raw UnicodeDecodeError
        (
            b'{"key": 1, "prompt": "p", "instruction_id_list": "punctuation:no_comma", "kwargs": [{}]}\n',
            "instruction_id_list must be a list of strings",  # was read letter by letter
        ),
        (
            b'{"key": 1, "prompt": "p", "instruction_id_list": ["a"], "kwargs": ["x"]}\n',
            "kwargs must be a list",
        ),
        (b"\n\n", "no IFEval prompts"),  # was an empty list and a score over nothing
    ],
)
def test_bad_ifeval_files_are_typed_errors_naming_the_line(tmp_path, content, match):
    from zjulab.conifer import ConiferInputError
    from zjulab.conifer.ifeval import load_ifeval

    path = tmp_path / "p.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConiferInputError, match=match):
        load_ifeval(path)


def test_a_line_separator_inside_a_json_string_is_not_a_line_break(tmp_path):
    # U+2028 is legal raw inside a JSON string (json.dumps(..., ensure_ascii=False) writes it);
    # str.splitlines broke such a row in two and the file was refused as invalid JSON
    prompt = "Write a poem\u2028about rivers.\u0085Use no commas."
    row = {"key": 1, "prompt": prompt, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    path = tmp_path / "input_data.jsonl"
    path.write_bytes(("\ufeff" + json.dumps(row, ensure_ascii=False) + "\r\n").encode("utf-8"))
    (loaded,) = load_ifeval(path)
    assert loaded.prompt == prompt
    from zjulab.conifer import load_prompt_texts

    assert load_prompt_texts(path) == [prompt]
