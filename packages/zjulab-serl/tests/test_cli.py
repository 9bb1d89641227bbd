import json

import pytest

from zjulab.serl.cli import build_parser, main


def test_parser_has_commands():
    p = build_parser()
    extra = {
        "judge": ["x"],
        "generate": ["x", "-o", "y"],
        "eval": ["--model-outputs", "a", "--reference-outputs", "b"],
        "train": ["--model", "m", "--data", "d", "--output-dir", "o"],
    }
    for cmd in ("demo", "judge", "generate", "eval", "train"):
        assert p.parse_args([cmd, *extra.get(cmd, [])]).command == cmd


def test_judge_command_on_tiny_model(tmp_path, tiny_causal_lm_path, capsys):
    groups = tmp_path / "groups.jsonl"
    groups.write_text(json.dumps({"instruction": "Say hi", "responses": ["hi", "hello there", "hey"]}) + "\n")
    out = tmp_path / "ranked.json"
    rc = main(
        [
            "judge",
            str(groups),
            "--model",
            str(tiny_causal_lm_path),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert len(data) == 1 and len(data[0]["judgments"]) == 3 * 2  # C(3,2) * K
    assert len(data[0]["verdict_matrix"]) == 3
    assert "verdict matrix" in capsys.readouterr().out


def test_generate_and_eval_commands(tmp_path, tiny_causal_lm_path, capsys):
    instr = tmp_path / "instructions.json"
    instr.write_text(json.dumps(["Say hi", {"instruction": "Name a color"}]))
    model_out = tmp_path / "model.json"
    assert (
        main(
            [
                "generate",
                str(instr),
                "-o",
                str(model_out),
                "--model",
                str(tiny_causal_lm_path),
                "--device",
                "cpu",
                "--max-new-tokens",
                "4",
                "--generator",
                "tiny",
            ]
        )
        == 0
    )
    rows = json.loads(model_out.read_text())
    assert [r["instruction"] for r in rows] == ["Say hi", "Name a color"] and rows[0]["generator"] == "tiny"
    ref = tmp_path / "ref.json"
    ref.write_text(
        json.dumps([{"instruction": r["instruction"], "output": "ref", "generator": "ref"} for r in rows])
    )
    ann = tmp_path / "ann.json"
    rc = main(
        [
            "eval",
            "--model-outputs",
            str(model_out),
            "--reference-outputs",
            str(ref),
            "--judge-model",
            str(tiny_causal_lm_path),
            "--device",
            "cpu",
            "--max-new-tokens",
            "4",
            "--annotations",
            str(ann),
        ]
    )
    assert rc == 0
    summary = json.loads(ann.read_text())["summary"]
    assert summary["n"] + summary["n_invalid"] == 2


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    assert main(["judge", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(SystemExit, match="row 0"):
        main(["judge", str(rows)])


def test_train_command_on_tiny_model(tmp_path, tiny_causal_lm_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "Say hi"}\n"Name a color"\n')
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_causal_lm_path), "--data", str(data), "--output-dir", str(out)]
    args += ["--num-generations", "2", "--batch-size", "4", "--max-steps", "1", "--device", "cpu"]
    args += ["--max-completion-length", "4", "--max-judge-completion-length", "2", "--learning-rate", "1e-3"]
    assert main(args) == 0
    assert (out / "config.json").is_file() or any(out.glob("*.safetensors"))


def test_lora_without_peft_names_the_extra(tmp_path, tiny_causal_lm_path, capsys, monkeypatch):
    import sys

    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "Say hi"}\n')
    monkeypatch.setitem(sys.modules, "peft", None)  # as if zjulab-serl[peft] were not installed
    args = [
        "train",
        "--model",
        str(tiny_causal_lm_path),
        "--data",
        str(data),
        "--output-dir",
        str(tmp_path / "o"),
    ]
    args += [
        "--num-generations",
        "2",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--lora-r",
        "4",
    ]
    assert main(args) != 0
    assert "pip install 'zjulab-serl[peft]'" in capsys.readouterr().err


def test_config_on_a_machine_without_bf16(tmp_path, monkeypatch):
    from zjulab.serl import SERLConfig, SERLConfigError

    # bf16 left unset follows the machine: no raw transformers error on a CPU
    cfg = SERLConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2)
    assert cfg.bf16 is False
    with pytest.raises(SERLConfigError, match="bf16=True needs a GPU"):
        SERLConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, bf16=True)


def test_plain_grpo_config_is_accepted(tmp_path, tiny_causal_lm):
    from datasets import Dataset
    from trl import GRPOConfig

    from zjulab.serl import SERLConfig, SERLTrainer

    model, tok = tiny_causal_lm
    tok.padding_side = "left"
    grpo = GRPOConfig(
        output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, use_cpu=True, bf16=False,
        report_to=[], max_completion_length=4,
    )  # fmt: skip
    trainer = SERLTrainer(
        model, args=grpo, train_dataset=Dataset.from_dict({"prompt": ["Say hi"]}), processing_class=tok
    )
    assert isinstance(trainer.serl_args, SERLConfig)
    assert trainer.serl_args.loss_type == grpo.loss_type == "dapo"  # TRL's default is kept
    assert (
        trainer.serl_args.num_judge_generations == 2 and trainer.serl_args.actor_reward == "length_controlled"
    )
    assert not isinstance(grpo, SERLConfig)  # the user's config object is left alone


def test_train_command_refuses_a_users_folder_and_resumes_its_own(tmp_path, tiny_causal_lm_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text('"Say hi"\n"Name a color"\n')
    common = ["train", "--model", str(tiny_causal_lm_path), "--data", str(data), "--device", "cpu"]
    common += ["--num-generations", "2", "--batch-size", "4", "--max-completion-length", "4"]
    common += ["--max-judge-completion-length", "2", "--learning-rate", "1e-3", "--save-steps", "1"]
    # the model's own folder (or any folder of the user's) is not a training folder
    assert main([*common, "--output-dir", str(tiny_causal_lm_path), "--max-steps", "1"]) == 2
    assert "no SERL run wrote" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main([*common, "--output-dir", str(out), "--resume", "--max-steps", "1"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main([*common, "--output-dir", str(out), "--max-steps", "1"]) == 0
    assert main([*common, "--output-dir", str(out), "--max-steps", "2", "--resume"]) == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["log_history"][0]["step"] == 1  # continued, not restarted
