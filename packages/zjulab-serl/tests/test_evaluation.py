import json
import math
import re

import pytest

from zjulab.common.testing import ScriptedChatModel
from zjulab.serl import (
    JudgeConfig,
    SERLInputError,
    SERLStoreError,
    length_controlled_win_rate,
    pairwise_win_rate,
    read_alpacaeval_outputs,
    write_alpacaeval_outputs,
    write_annotations,
)


def prefer_text(marker):
    """A judge that prefers whichever answer contains ``marker``; says nothing useful otherwise."""

    def respond(conv):
        text = conv[-1]["content"]
        a = re.search(r"## Answer 1\n(.*?)\n\n## Answer 2", text, re.S).group(1)
        b = re.search(r"## Answer 2\n(.*?)\n\n## Your verdict", text, re.S).group(1)
        if marker in a and marker not in b:
            return "\\boxed{1}"
        if marker in b and marker not in a:
            return "\\boxed{2}"
        return "no idea"

    return respond


INSTR = ["q1", "q2", "q3", "q4"]
REFS = ["ref answer one", "ref answer two", "good ref three", "ref four"]
OUTS = ["good model one", "model two", "model three", "good model four"]


def test_win_rate_both_orders():
    judge = ScriptedChatModel(prefer_text("good"))
    res = pairwise_win_rate(INSTR, OUTS, REFS, judge)
    # items 1 and 4: model wins in both orders; item 3: reference wins; item 2: no valid verdict
    assert (res.wins, res.losses, res.ties, res.invalid, res.n) == (2, 1, 0, 1, 3)
    assert res.win_rate == pytest.approx(200 / 3)
    assert len(judge.calls) == 8
    assert res.records[0].preference == 2.0 and res.records[2].preference == 1.0
    assert res.records[1].score is None


def test_position_biased_judge_gives_ties():
    res = pairwise_win_rate(INSTR, OUTS, REFS, ScriptedChatModel(default="\\boxed{1}"))
    assert res.ties == 4 and res.win_rate == 50.0
    one_order = pairwise_win_rate(
        INSTR, OUTS, REFS, ScriptedChatModel(default="\\boxed{1}"), both_orders=False
    )
    assert one_order.win_rate == 0.0  # the reference is shown first and always wins


def test_lc_win_rate_closed_forms():
    # equal lengths: the length term is zero and LC equals the raw win rate
    assert length_controlled_win_rate([1, 1, 0, 0.5], [5] * 4, [5] * 4) == pytest.approx(62.5, abs=1e-4)
    # two symmetric length groups (saturated model): b0 = (logit(p+) + logit(p-)) / 2
    scores = [0.9, 0.9, 0.5, 0.5]
    lc = length_controlled_win_rate(scores, [20, 20, 10, 10], [10, 10, 20, 20])
    b0 = (math.log(0.9 / 0.1) + 0.0) / 2
    assert lc == pytest.approx(100 / (1 + math.exp(-b0)), abs=1e-3)
    # wins explained by length alone (win when longer, lose when shorter): LC is 50
    assert length_controlled_win_rate([1, 1, 0, 0], [20, 20, 10, 10], [10, 10, 20, 20]) == pytest.approx(
        50, abs=1e-3
    )
    with pytest.raises(SERLInputError, match="equally many"):
        length_controlled_win_rate([1], [1, 2], [1])
    with pytest.raises(SERLInputError, match=r"\[0, 1\]"):
        length_controlled_win_rate([2], [1], [1])


def test_alpacaeval_files_round_trip(tmp_path):
    path = tmp_path / "outputs.json"
    write_alpacaeval_outputs(path, INSTR, OUTS, "my-model", dataset="demo")
    rows = json.loads(path.read_text())
    assert rows[0] == {
        "instruction": "q1",
        "output": "good model one",
        "generator": "my-model",
        "dataset": "demo",
    }
    assert read_alpacaeval_outputs(path) == rows
    res = pairwise_win_rate(INSTR, OUTS, REFS, ScriptedChatModel(prefer_text("good")))
    ann = tmp_path / "annotations.json"
    write_annotations(ann, res, "my-model", "ref-model")
    data = json.loads(ann.read_text())
    assert data["summary"]["n_wins"] == 2 and data["version"] == 1
    assert (
        data["annotations"][0]["output_1"] == "ref answer one" and data["annotations"][0]["preference"] == 2.0
    )


def test_file_errors(tmp_path):
    with pytest.raises(SERLStoreError, match="no such file"):
        read_alpacaeval_outputs(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": "x"}]')
    with pytest.raises(SERLStoreError, match="row 0"):
        read_alpacaeval_outputs(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(SERLStoreError, match=r"broken\.json"):
        read_alpacaeval_outputs(broken)
    with pytest.raises(SERLInputError, match="equally many"):
        pairwise_win_rate(["a"], [], [], ScriptedChatModel(default="x"))
    with pytest.raises(SERLInputError, match="2 instructions but 1"):
        write_alpacaeval_outputs(tmp_path / "o.json", ["a", "b"], ["x"], "m")
    assert JudgeConfig().verdict_format == "boxed"
