from pathlib import Path

import pytest

from zjulab.crs.cli import main
from zjulab.crs.errors import MetricInputError, UnknownLabelError
from zjulab.crs.report import evaluate_by_category, format_table, score_predictions
from zjulab.crs.samples import ElicitationExample
from zjulab.crs.suite import SuiteConfig, TaskResult, five_task_table


class Fixed:
    def __init__(self, answers):
        self.answers = answers

    def predict(self, examples):
        return [self.answers[e.category] for e in examples]


def test_evaluate_by_category_scores_each_category_once():
    ex = [ElicitationExample([], [], ["a"], "x")] * 3 + [ElicitationExample([], [], ["b"], "y")] * 3
    by_cat, _ = evaluate_by_category(Fixed({"x": ["a"], "y": ["a"]}), "elicitation", ex)
    assert by_cat["all"]["f1"] == pytest.approx(0.5)
    assert by_cat["x"]["f1"] == 1.0 and by_cat["y"]["f1"] == 0.0


def test_report_errors():
    with pytest.raises(UnknownLabelError, match="unknown task 'chat'"):
        score_predictions("chat", [], [])
    with pytest.raises(MetricInputError, match="1 examples but 0 predictions"):
        score_predictions("elicitation", [ElicitationExample([], [], ["a"])], [])


def test_format_table_and_five_task_table():
    assert format_table([{"a": 1.0, "b": "x"}]) == "| a      | b |\n| ------ | - |\n| 1.0000 | x |"
    res = [TaskResult("evaluation", "RUBER cosine", "baseline", {"pearson": 0.25, "spearman": 0.5})]
    table = five_task_table(res)
    assert "| evaluation | RUBER cosine" in table and "0.2500" in table and "spearman 0.5000" in table
    assert "paper: DEB (U-NEED, other data)" in table and "0.1617" in table
    with pytest.raises(Exception, match="unknown task"):
        SuiteConfig(tasks=("chat",))


def test_five_task_table_states_the_all_tied_count_out_of_the_examples():
    # all_tied is a count of examples, not a rate: "3 of 60", never "3.0000"
    res = [
        TaskResult(
            "recommendation",
            "attribute match",
            "baseline",
            {"hit@10": 0.5, "hit@50": 1.0, "mrr@10": 0.25, "all_tied": 3.0},
            n_test=60,
        )
    ]
    table = five_task_table(res, with_paper=False)
    assert "all_tied 3 of 60" in table and "3.0000" not in table


def test_cli_demo_runs_one_task(capsys):
    assert main(["demo", "--tasks", "evaluation", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "| evaluation" in out and "RUBER cosine" in out and "encoder regression" in out


def test_cli_eval_baseline_and_validate(capsys, tmp_path: Path, uneed_dir: Path):
    assert main(["eval", "elicitation"]) == 0
    out = capsys.readouterr().out
    assert "FrequencyElicitor" in out and "| all" in out and "| beauty" in out
    assert main(["validate", str(uneed_dir)]) == 0
    assert "OK" in capsys.readouterr().out


def test_cli_errors_are_reported_not_raised(capsys, tmp_path: Path):
    bad = tmp_path / "train_dialogue.json"
    bad.write_text('[{"domain": "x"}]', encoding="utf-8")
    assert main(["validate", str(bad)]) == 2
    assert "missing field 'dialogue'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "chat"])


def test_cli_train_tiny_and_eval_checkpoint(capsys, tmp_path: Path):
    out_dir = tmp_path / "ckpt"
    assert (
        main(
            [
                "train",
                "evaluation",
                "--model",
                "tiny",
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--device",
                "cpu",
                "--out",
                str(out_dir),
            ]
        )
        == 0
    )
    assert (out_dir / "crs.json").is_file()
    assert main(["eval", "evaluation", "--checkpoint", str(out_dir), "--device", "cpu"]) == 0
    assert "QualityRegressor" in capsys.readouterr().out


def test_generation_scores_pick_the_chinese_tokenizer_for_chinese_references():
    from zjulab.crs.samples import GenerationExample
    from zjulab.crs.task_scores import generation_scores

    ex = [GenerationExample([], [], [], None, "补水面霜")]
    # per-character tokens: 3 of 4 match; with 13a the whole string would be one (wrong) token
    assert generation_scores(ex, ["补水面膜"])["bleu1"] == pytest.approx(0.75, abs=1e-6)
    out = generation_scores(ex, ["补水面膜"], tokenize="13a")
    assert out["corpus_bleu1"] == 0.0 and out["bleu1"] == pytest.approx(0.75)


def test_cli_task5_baseline_is_the_papers_ruber_trained_on_the_train_split(capsys):
    # the paper's task-5 baseline is RUBER (a trained unreferenced scorer), not the untrained
    # context/response cosine
    assert main(["eval", "evaluation"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert ", Ruber, " in head, head


def test_ruber_encoder_defaults_to_a_chinese_bert_on_uneed_and_hashing_on_synthetic(monkeypatch):
    from zjulab.crs import cli

    assert cli.RUBER_ZH_ENCODER == "bert-base-chinese"
    assert cli._ruber_encoder("auto", "synthetic", "cpu") is None  # Ruber's own offline default
    assert cli._ruber_encoder("hashing", "path/to/u_need", "cpu") is None
    seen = {}

    class Recorder:
        def __init__(self, model, **kw):
            seen.update(model=model, **kw)

    monkeypatch.setattr("zjulab.common.encoders.TransformersEncoder", Recorder)
    assert isinstance(cli._ruber_encoder("auto", "path/to/u_need", "cpu"), Recorder)
    assert seen == {"model": "bert-base-chinese", "pooling": "mean", "max_length": 128, "device": "cpu"}


def test_unavailable_ruber_encoder_names_the_model_and_the_offline_choice(monkeypatch):
    from zjulab.common.errors import ModelNotAvailableError
    from zjulab.crs import cli

    def missing(model, **kw):
        raise ModelNotAvailableError(f"{model}: not in the local cache")

    monkeypatch.setattr("zjulab.common.encoders.TransformersEncoder", missing)
    with pytest.raises(ModelNotAvailableError, match=r"'bert-base-chinese'.*--encoder hashing"):
        cli._ruber_encoder("auto", "u_need", "cpu")


def test_eval_evaluation_scores_with_the_encoder_it_is_given(tiny_encoder_path, capsys):
    from zjulab.crs.cli import main

    assert main(["eval", "evaluation", "--encoder", str(tiny_encoder_path), "--device", "cpu"]) == 0
    with_model = capsys.readouterr().out
    assert main(["eval", "evaluation", "--encoder", "hashing"]) == 0
    lexical = capsys.readouterr().out
    assert "Ruber" in with_model and with_model.splitlines()[1:] != lexical.splitlines()[1:]
