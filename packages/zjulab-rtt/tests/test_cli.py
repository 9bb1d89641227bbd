"""The command line: the demo on the tiny model, discriminator training, errors."""

import json

from zjulab.rtt import Rubric
from zjulab.rtt.cli import main


def test_demo_on_the_tiny_model(capsys):
    assert main(["demo", "--tiny", "--max-completion-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "step 2:" in out
    assert "per-token credit" in out
    assert "\x1b[48;2;" in out  # the coloured line


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
