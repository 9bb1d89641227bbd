"""The command line: the demo on the tiny model, discriminator training, errors."""

import json

import pytest

from zjulab.rtt import Rubric
from zjulab.rtt.cli import main


def test_demo_on_the_tiny_model(capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["demo", "--tiny", "--max-completion-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "step 2:" in out
    assert "per-token credit" in out
    assert "\x1b[" not in out  # captured output is not a terminal: no escape codes
    # "RTT still does" only when the response shown carries token credit
    assert ("RTT still does" in out) <= ("largest |A_tok|" in out)
    assert ("no token of this batch carries rubric credit" in out) != ("largest |A_tok|" in out)


def test_demo_colour_follows_the_terminal_and_no_color(capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert main(["demo", "--tiny", "--steps", "1", "--max-completion-length", "8"]) == 0
    assert "\x1b[48;2;" in capsys.readouterr().out  # forced on: the coloured line
    monkeypatch.setenv("NO_COLOR", "1")  # NO_COLOR wins over FORCE_COLOR
    assert main(["demo", "--tiny", "--steps", "1", "--max-completion-length", "8"]) == 0
    assert "\x1b[" not in capsys.readouterr().out


def test_plain_credit_marks_the_credited_tokens():
    from zjulab.rtt import colorize_credit

    line = colorize_credit(["No", ",", " blue", " sea"], [0.0, -2.0, 1.5, 0.01], color=False)
    assert line == "No\u00ab,\u00bb(-2.00) \u00abblue\u00bb(+1.50) sea"
    assert "\x1b[" not in line
    assert colorize_credit(["a"], [1.0]).endswith("\x1b[0m")  # the API default stays coloured


def test_train_discriminator_synthetic(tmp_path, capsys):
    out_dir = tmp_path / "disc"
    args = [
        "train-discriminator",
        "--tiny",
        "--synthetic",
        "120",
        "--lr",
        "1e-2",
        "--epochs",
        "2",
        "--max-length",
        "256",
    ]
    assert main([*args, "--out", str(out_dir)]) == 0
    text = capsys.readouterr().out
    f1 = float(text.split("held-out token P/R/F1:")[1].split("/")[2].split()[0])
    assert f1 > 0.9
    assert (out_dir / "rtt_discriminator.json").is_file()


def test_eval_needs_prompts(capsys, monkeypatch):
    monkeypatch.delenv("ZJULAB_IFEVAL", raising=False)
    assert main(["eval", "--model", "unused"]) == 2
    assert "--ifeval" in capsys.readouterr().err


def test_eval_with_tiny_model(tmp_path, tiny_causal_lm_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text(
        json.dumps({"prompt": "Say hi", "rubrics": [Rubric.check("punctuation:no_comma").to_dict()]}) + "\n"
    )
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_causal_lm_path),
                "--data",
                str(data),
                "--max-new-tokens",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["responses"] == 1 and res["rubrics"] == 1
    assert res["rubric_level"] in (0.0, 1.0)


def test_train_with_judge_rubrics_from_a_served_judge(tmp_path, tiny_causal_lm_path, capsys):
    from zjulab.common.testing import ScriptedChatModel
    from zjulab.common.testing.server import ChatServer

    def judge(conv):  # a reasoning judge; its answer depends on the criterion it is asked about
        text = conv[-1]["content"]
        verdict = "YES" if "Criterion: Be brief." in text else "NO"
        return f"<think>\nchecking the criterion\n</think>\n\n{verdict}"

    data = tmp_path / "p.jsonl"
    rubrics = [Rubric.check("punctuation:no_comma").to_dict(), "Mention the weather."]
    data.write_text(json.dumps({"prompt": "Say hi", "rubrics": rubrics}) + "\n")
    out = tmp_path / "out"
    with ChatServer(ScriptedChatModel(judge), models=["judge"]) as server:
        code = main(
            [
                "train",
                "--model",
                str(tiny_causal_lm_path),
                "--data",
                str(data),
                "--judge-rubric",
                "Be brief.",
                "--judge-model",
                "judge",
                "--judge-base-url",
                server.url,
                "--steps",
                "1",
                "--num-generations",
                "2",
                "--max-completion-length",
                "4",
                "--device",
                "cpu",
                "--output-dir",
                str(out),
            ]
        )
        asked = [r["messages"][-1]["content"] for r in server.requests]
    assert code == 0
    # both free-text rubrics (from the data and from the command line) went to the served judge
    assert any("Criterion: Be brief." in a for a in asked)
    assert any("Criterion: Mention the weather." in a for a in asked)
    assert all(r["max_tokens"] == 512 for r in server.requests)
    assert (out / "config.json").is_file()


def test_train_refuses_judge_rubrics_without_a_judge(tmp_path, tiny_causal_lm_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "Say hi", "rubrics": ["Mention the weather."]}) + "\n")
    code = main(["train", "--model", str(tiny_causal_lm_path), "--data", str(data), "--steps", "1"])
    assert code != 0
    assert "--judge-model" in capsys.readouterr().err


def _train_args(model, data, out):
    return [
        "train", "--model", str(model), "--data", str(data), "--steps", "1", "--num-generations", "2",
        "--max-completion-length", "4", "--device", "cpu", "--output-dir", str(out),
    ]  # fmt: skip


def test_train_never_replaces_a_users_folder(tmp_path, tiny_causal_lm_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text(
        json.dumps({"prompt": "Say hi", "rubrics": [Rubric.check("punctuation:no_comma").to_dict()]})
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my own config")
    (mine / "notes.txt").write_text("keep me")
    assert main(_train_args(tiny_causal_lm_path, data, mine)) == 2
    assert "not empty and was not written by zjulab-rtt" in capsys.readouterr().err
    assert (mine / "config.json").read_text() == "my own config" and (
        mine / "notes.txt"
    ).read_text() == "keep me"
    # a folder it wrote itself is replaced whole; TRL's scratch files never land in it
    out = tmp_path / "out"
    assert main(_train_args(tiny_causal_lm_path, data, out)) == 0
    assert main(_train_args(tiny_causal_lm_path, data, out)) == 0
    assert (out / "config.json").is_file() and not list(out.glob("checkpoint-*"))
    # no temporaries left; .out.lock is the documented lock file of common's atomic_directory
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "mine", "out", "p.jsonl"]


def test_discriminator_never_replaces_a_users_folder(tmp_path, capsys, tiny_causal_lm):
    from zjulab.rtt import DiscriminatorStoreError, RelevanceDiscriminator

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "photo.jpg").write_bytes(b"\xff\xd8")
    args = ["train-discriminator", "--tiny", "--synthetic", "20", "--max-length", "64", "--out", str(mine)]
    assert main(args) == 2
    assert "not empty and holds no saved discriminator" in capsys.readouterr().err
    model, tok = tiny_causal_lm
    disc = RelevanceDiscriminator.from_causal_lm(model, tok, max_length=64)
    with pytest.raises(DiscriminatorStoreError, match="not empty"):
        disc.save(mine)
    assert (mine / "photo.jpg").read_bytes() == b"\xff\xd8" and len(list(mine.iterdir())) == 1
    disc.save(tmp_path / "disc")
    disc.save(tmp_path / "disc")  # its own folder: replaced
    assert (tmp_path / "disc" / "rtt_discriminator.json").is_file()
