"""IFEval loading, rubric prompt files, accuracy metrics, configuration checks, display."""

import json

import pytest

from zjulab.common.errors import ConfigError
from zjulab.rtt import (
    DiscriminatorConfig,
    RTTConfig,
    Rubric,
    RubricError,
    colorize_credit,
    load_ifeval,
    load_rubric_prompts,
    rubric_accuracy,
    to_dataset_rows,
)


def test_ifeval_prompts_become_checker_rubrics(shared_data):
    path = shared_data / "ifeval" / "input_data.jsonl"
    strict = load_ifeval(path)
    loose = load_ifeval(path, unsupported="drop_rubric")
    assert 400 < len(strict) < len(loose) <= 541
    first = strict[0]
    assert first.key == "1000"
    assert [r.checker for r in first.rubrics] == [
        "punctuation:no_comma",
        "detectable_format:number_highlighted_sections",
        "length_constraints:number_words",
    ]
    assert first.rubrics[2].kwargs == {"relation": "at least", "num_words": 300}
    assert all(not p.dropped for p in strict)
    assert any("length_constraints:number_sentences" in p.dropped for p in loose)
    rows = to_dataset_rows(strict[:2])
    assert rows[0]["prompt"][0]["role"] == "user"
    assert Rubric.from_obj(rows[0]["rubrics"][0]).checker == "punctuation:no_comma"
    assert len(load_ifeval(path, limit=5)) == 5


def test_ifeval_bad_file(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"key": 1, "prompt": "p", "instruction_id_list": ["a"]}\n')
    with pytest.raises(RubricError, match=r"x.jsonl:1"):
        load_ifeval(p)
    with pytest.raises(RubricError, match="not found"):
        load_ifeval(tmp_path / "missing.jsonl")


def test_rubric_prompt_file(tmp_path):
    p = tmp_path / "r.jsonl"
    rows = [
        {"prompt": "Say hi", "rubrics": [Rubric.check("punctuation:no_comma").to_dict(), "Be warm."]},
        {"prompt": "", "rubrics": []},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(RubricError, match=r"r.jsonl:2: prompt must be non-empty"):
        load_rubric_prompts(p)
    p.write_text(json.dumps(rows[0]) + "\n")
    (got,) = load_rubric_prompts(p)
    assert got.rubrics[1].kind == "judge"


def test_rubric_accuracy_by_hand():
    rubrics = [
        [Rubric.check("punctuation:no_comma"), Rubric.check("keywords:existence", keywords=["a"])]
    ] * 2 + [[]]
    acc = rubric_accuracy(["p"] * 3, ["a b", "x, y", "ignored"], rubrics)
    # response 1: 2/2; response 2: 0/2; response 3 has no rubric
    assert (acc.instruction_level, acc.rubric_level, acc.responses, acc.rubrics) == (0.5, 0.5, 2, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": -1}, "lam"),
        ({"combine": "mix", "lam": 1.5}, "lam"),
        ({"combine": "sum"}, "combine"),
        ({"token_norm": "global"}, "token_norm"),
        ({"eps": -1}, "eps"),
        ({"softmax_temperature": 0}, "softmax_temperature"),
        ({"relevance_batch_size": 0}, "relevance_batch_size"),
    ],
)
def test_rtt_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RTTConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"threshold": 1.0}, "threshold"),
        ({"lora_r": 0}, "lora_r"),
        ({"max_length": 4}, "max_length"),
    ],
)
def test_discriminator_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DiscriminatorConfig(**kwargs)


def test_colorize_credit():
    out = colorize_credit(["a", "b", "c"], [1.0, -1.0, 0.0])
    assert out == (
        "\x1b[48;2;100;255;100m\x1b[38;2;0;0;0ma"
        "\x1b[48;2;255;100;100m\x1b[38;2;0;0;0mb"
        "\x1b[48;2;255;255;255m\x1b[38;2;0;0;0mc\x1b[0m"
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"checker": "keywords:existence", "kwargs": {"keywords": "blue"}}, "'keywords' must be a list"),
        (
            {
                "checker": "keywords:frequency",
                "kwargs": {"keyword": "a", "frequency": 2, "relation": "about"},
            },
            "'relation'",
        ),
        (
            {
                "checker": "length_constraints:number_words",
                "kwargs": {"num_words": "ten", "relation": "at least"},
            },
            "'num_words'",
        ),
        ({"checker": "detectable_format:number_bullet_lists", "kwargs": {"num_bullets": -1}}, "non-negative"),
        ({"checker": "detectable_format:number_bullet_lists", "kwargs": {}}, "does not accept"),
        ({"checker": "punctuation:no_comma", "kwargs": {"extra": 1}}, "does not accept"),
    ],
)
def test_bad_checker_arguments_are_refused_when_read(tmp_path, kwargs, match):
    from zjulab.rtt import load_rubric_prompts

    data = tmp_path / "p.jsonl"
    data.write_text(
        '{"prompt": "fine", "rubrics": []}\n\n' + json.dumps({"prompt": "hi", "rubrics": [kwargs]}) + "\n"
    )
    with pytest.raises(RubricError, match=match) as err:
        load_rubric_prompts(data)
    assert f"{data}:3:" in str(err.value)  # the file and the line (blank lines counted)
    # an integral float count is accepted as the integer
    assert Rubric.check("detectable_format:number_bullet_lists", num_bullets=3.0).kwargs == {"num_bullets": 3}


@pytest.mark.parametrize(
    "content,match",
    [(b'{"prompt": "x"}\n\xff\xfe\n', r":2: not UTF-8"), (b"[1, 2]\n", r":1: expected a JSON object")],
)
def test_unreadable_prompt_files_name_the_line(tmp_path, content, match):
    from zjulab.rtt import load_ifeval, load_rubric_prompts

    data = tmp_path / "p.jsonl"
    data.write_bytes(content)
    with pytest.raises(RubricError, match=match):
        load_rubric_prompts(data)
    with pytest.raises(RubricError, match=r":\d+: (not UTF-8|not an IFEval record)"):
        load_ifeval(data)
    with pytest.raises(RubricError, match="is a directory"):
        load_rubric_prompts(tmp_path)


@pytest.mark.parametrize(
    "line,match",
    [
        ('{"criterion": "c"}', "needs 'criterion' and 'response'"),
        ('{"criterion": "c", "response": "abc", "spans": [0, 2]}', "list of \\[start, end\\] pairs"),
        ('{"criterion": "c", "response": "abc", "spans": [[0, 9]]}', "does not fit"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_train_discriminator_bad_span_data(tmp_path, capsys, line, match):
    import re

    from zjulab.rtt.cli import main

    data = tmp_path / "spans.jsonl"
    data.write_text('{"criterion": "c", "response": "abc", "spans": [[0, 1]]}\n' + line + "\n")
    assert main(["train-discriminator", "--tiny", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2:" in err and re.search(match, err) and "Traceback" not in err
