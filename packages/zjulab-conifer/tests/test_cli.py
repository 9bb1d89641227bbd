"""The command line on small files (no model needed)."""

import json

from zjulab.conifer import Pipeline, PipelineConfig, load_ifeval, load_seeds
from zjulab.conifer.cli import main

from .fakes import FakeModel, weak_reply


def test_check_prints_per_type_table(tmp_path, capsys):
    f = tmp_path / "resp.jsonl"
    rows = [
        {"response": "No commas here", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"response": "One, two", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"answer": "<<T>>\nbody", "checks": [{"id": "detectable_format:title", "kwargs": {}}]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "punctuation:no_comma                                2   0.500   0.500" in out
    assert "detectable_format:title                             1   1.000   1.000" in out
    assert "all                                                 3   0.667   0.667" in out


def test_check_reports_bad_rows(tmp_path, capsys):
    f = tmp_path / "resp.jsonl"
    f.write_text(json.dumps({"response": "x"}) + "\n")
    assert main(["check", str(f)]) == 2
    assert "resp.jsonl:1" in capsys.readouterr().err
    f.write_text("[1, 2]\n")  # used to end in an AttributeError traceback
    assert main(["check", str(f)]) == 2
    assert "resp.jsonl:1: a row must be a JSON object, got list" in capsys.readouterr().err
    f.write_text("")  # used to print an empty table and exit 0
    assert main(["check", str(f)]) == 2
    assert "no rows to check" in capsys.readouterr().err


def test_check_names_the_line_and_argument_of_bad_kwargs(tmp_path, capsys):
    f = tmp_path / "resp.jsonl"
    rows = [
        {"response": "fine", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {
            "response": "I like good food",
            "instruction_id_list": ["keywords:existence"],
            "kwargs": [{"keywords": "dog"}],
        },
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "resp.jsonl:2: keywords:existence: argument 'keywords'" in err
    f.write_text(json.dumps({"response": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}))
    assert main(["check", str(f)]) == 2
    assert "resp.jsonl:1: kwargs must be a list of 1 object(s)" in capsys.readouterr().err
    f.write_text(json.dumps({"response": "x", "checks": [{"kwargs": {}}]}))
    assert main(["check", str(f)]) == 2
    assert "resp.jsonl:1: checks must be a list" in capsys.readouterr().err


def test_eval_ifeval(tmp_path, capsys, ifeval_path):
    lines = ifeval_path.read_text().splitlines()[:20]
    sub = tmp_path / "prompts.jsonl"
    sub.write_text("\n".join(lines) + "\n")
    first = [json.loads(x) for x in lines]
    n_inst = sum(len(r["instruction_id_list"]) for r in first)
    f = tmp_path / "r.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": r["prompt"], "response": r["prompt"]}) for r in first))
    assert main(["eval-ifeval", str(f), "--prompts", str(sub), "--table"]) == 0
    out = capsys.readouterr().out
    assert "num_prompts           20" in out and f"num_instructions      {n_inst}" in out
    assert "punctuation:no_comma" in out


def test_conifer_export_keeps_every_answer_and_says_what_no_feedback_leaves_out(tmp_path, capsys):
    cfg = PipelineConfig(out_dir=str(tmp_path / "run"), num_reframes=1, num_levels=3, few_shot=False)
    res = Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(
        load_seeds(["How do I keep a starter alive?"])
    )
    answers = [r["answer"] for r in res.records]
    with_process = sum(bool(r.get("process_in_answer")) for r in res.records)
    assert with_process == 3 and len(answers) == 6
    out = tmp_path / "sft.jsonl"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    said = {m["content"] for x in out.read_text().splitlines() for m in json.loads(x)["messages"]}
    assert all(a in said for a in answers)  # no answered record missing from the export
    capsys.readouterr()
    lean = tmp_path / "lean.jsonl"
    assert main(["export", str(tmp_path / "run"), "--out", str(lean), "--no-feedback"]) == 0
    said = {m["content"] for x in lean.read_text().splitlines() for m in json.loads(x)["messages"]}
    assert sum(a not in said for a in answers) == with_process
    assert (
        "left out 3 answered records whose answers carry their internal feedback" in capsys.readouterr().out
    )


def test_export_jsonl_and_hf(tmp_path, capsys):
    cfg = PipelineConfig(
        mode="verifiable",
        out_dir=str(tmp_path / "run"),
        num_reframes=1,
        num_levels=3,
        hard_level=2,
        few_shot=False,
    )
    Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(load_seeds(["How do I keep a starter alive?"]))
    out = tmp_path / "sft.jsonl"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    convs = [json.loads(x)["messages"] for x in out.read_text().splitlines()]
    # one easy-to-hard conversation (3 levels), 2 internal-feedback, 1 external-feedback
    assert [len(c) for c in convs] == [6, 2, 2, 4]
    assert [m["content"][:2] for m in convs[0] if m["role"] == "user"] == ["L1", "L2", "L3"]
    assert (
        main(
            [
                "export",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "hf"),
                "--format",
                "hf",
                "--no-feedback",
            ]
        )
        == 0
    )
    import datasets

    assert len(datasets.load_from_disk(str(tmp_path / "hf"))) == 1
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "new.jsonl")]) == 2
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2  # never over an existing file
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--overwrite"]) == 0
    dpo = tmp_path / "dpo.jsonl"
    assert main(["export", str(tmp_path / "run"), "--out", str(dpo), "--kind", "dpo"]) == 0
    (pair,) = [json.loads(x) for x in dpo.read_text().splitlines()]
    assert pair["prompt"][0]["content"].startswith("L3") and pair["rejected"][0]["content"].startswith("weak")
    assert pair["chosen"][0]["content"] == "Answer to <" + pair["prompt"][0]["content"] + ">"


def test_run_with_the_server_down_exits_nonzero_then_recovers(tmp_path, capsys):
    from .stub import StubServer

    (tmp_path / "seeds.txt").write_text("How do I keep a sourdough starter alive?\n")
    with StubServer() as stub:
        cfg = {
            "mode": "verifiable",
            "out_dir": "run",
            "seeds_path": "seeds.txt",
            "num_levels": 3,
            "num_reframes": 1,
            "few_shot": False,
            "max_remote_retries": 0,
            "retry_backoff": 0.0,
            "strong_model": {
                "kind": "openai",
                "model": "m",
                "base_url": stub.url,
                "api_key": "k",
                "max_retries": 0,
            },
        }
        (tmp_path / "c.json").write_text(json.dumps(cfg))
        stub.down = True
        assert main(["run", str(tmp_path / "c.json")]) == 3  # not a success
        captured = capsys.readouterr()
        assert "0 records, 1 set aside" in captured.out and "incomplete: 1 request(s) failed" in captured.err
        (row,) = [
            json.loads(x) for x in (tmp_path / "run" / "02_reframe.setaside.jsonl").read_text().splitlines()
        ]
        assert row["state"] == "failed" and "RemoteModelError" in row["reason"]
        # an incomplete run is not exported unless asked for, and then labelled
        assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x.jsonl")]) == 2
        assert "incomplete run" in capsys.readouterr().err
        assert not (tmp_path / "x.jsonl").exists()
        stub.down = False
        assert main(["run", str(tmp_path / "c.json")]) == 0
        assert "3 records, 0 set aside" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x.jsonl")]) == 0
    assert not (tmp_path / "x.jsonl.partial.json").exists()


def test_export_refuses_a_run_missing_its_answer_stage(tmp_path, capsys):
    from zjulab.conifer.stages import ReframeStage, SeedStage

    cfg = PipelineConfig(out_dir=str(tmp_path / "run"), num_reframes=1, few_shot=False)
    Pipeline(FakeModel(), None, cfg, stages=[SeedStage(cfg), ReframeStage(1)]).run(
        load_seeds(["How do I keep a starter alive?"])
    )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    # a run that stopped after its second stage (killed): the manifest lists stages not done
    manifest["stages"] += ["answer"]
    manifest["complete"] = False
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "sft.jsonl"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert "stage(s) ['answer'] never finished" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--partial"]) == 0
    assert "PARTIAL" in capsys.readouterr().out
    label = json.loads((tmp_path / "sft.jsonl.partial.json").read_text())
    assert label == {"partial": True, "missing_stages": ["answer"], "failed": {}}


def test_generate_ifeval_answers_scores_and_resumes(tmp_path, capsys, ifeval_path):
    from .stub import StubServer

    with StubServer() as stub:
        argv = [
            "generate-ifeval",
            "--prompts",
            str(ifeval_path),
            "--limit",
            "12",
            "--out-dir",
            str(tmp_path / "gen"),
            "--model",
            "m",
            "--base-url",
            stub.url,
            "--api-key-env",
            "CONIFER_TEST_KEY",
            "--max-in-flight",
            "4",
        ]
        import os

        os.environ["CONIFER_TEST_KEY"] = "k"
        assert main(argv) == 0
        assert stub.total() == 12 and stub.max_in_flight <= 4
        out = capsys.readouterr().out
        assert "num_prompts           12" in out
        assert main(argv) == 0  # replayed from the cache
        assert stub.total() == 12
    rows = [json.loads(x) for x in (tmp_path / "gen" / "responses.jsonl").read_text().splitlines()]
    first = json.loads(ifeval_path.read_text().splitlines()[0])
    assert rows[0] == {"prompt": first["prompt"], "response": f"Answer to <{first['prompt']}>"}
    scores = json.loads((tmp_path / "gen" / "scores.json").read_text())
    assert scores["complete"] is True and scores["num_prompts"] == 12


def test_an_unfinished_generate_ifeval_run_never_scores_as_finished(tmp_path, capsys, ifeval_path):
    # the prompts that got no answer were written as empty responses, indistinguishable from
    # real empty answers: eval-ifeval scored the unfinished file as a finished one
    from .stub import StubServer

    prompts = load_ifeval(ifeval_path)[:4]
    with StubServer() as stub:
        stub.refuse(lambda text: text == prompts[1].prompt)
        argv = [
            "generate-ifeval",
            "--prompts",
            str(ifeval_path),
            "--limit",
            "4",
            "--out-dir",
            str(tmp_path / "g"),
        ]
        argv += ["--model", "m", "--base-url", stub.url, "--max-in-flight", "2"]
        assert main(argv) == 3
    rows = [json.loads(x) for x in (tmp_path / "g" / "responses.jsonl").read_text().splitlines()]
    assert [r.get("answered", True) for r in rows] == [True, False, True, True]
    scores = json.loads((tmp_path / "g" / "scores.json").read_text())
    assert scores["complete"] is False and scores["unanswered"] == 1
    capsys.readouterr()
    code = main(["eval-ifeval", str(tmp_path / "g" / "responses.jsonl"), "--prompts", str(ifeval_path)])
    assert code != 0 and "response row 1 was never answered" in capsys.readouterr().err


def test_export_push_to_hub_dry_run_and_upload(tmp_path, capsys, monkeypatch):
    cfg = PipelineConfig(
        mode="verifiable", out_dir=str(tmp_path / "run"), num_reframes=1, num_levels=3, few_shot=False
    )
    Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(load_seeds(["How do I keep a starter alive?"]))
    out = tmp_path / "sft.jsonl"
    argv = ["export", str(tmp_path / "run"), "--out", str(out), "--push-to-hub", "me/conifer-mini"]
    assert main([*argv, "--hub-dry-run"]) == 0
    argv.append("--overwrite")
    folder = tmp_path / "sft.jsonl.hub"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n") and "path: data/train.jsonl" in card
    assert "size_categories:\n- n<1K" in card and "curation mode: `verifiable`" in card
    assert (folder / "data" / "train.jsonl").read_text() == out.read_text()
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw["repo_type"], kw["private"]))

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], kw["folder_path"], tuple(kw["allow_patterns"])))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(argv) == 0
    assert calls == [
        ("create", "me/conifer-mini", "dataset", True),
        ("upload", "me/conifer-mini", str(folder), ("README.md", "data/*")),
    ]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    assert main([*argv, "--hub-dry-run", "--hub-folder", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_train_cli_sft_and_dpo_on_a_tiny_model(tmp_path, capsys):
    import pytest

    pytest.importorskip("trl")
    from zjulab.common.testing import save_tiny, tiny_causal_lm

    model_dir = save_tiny(*tiny_causal_lm(seed=0), tmp_path / "tiny")
    cfg = PipelineConfig(
        mode="verifiable", out_dir=str(tmp_path / "run"), num_reframes=1, num_levels=3, few_shot=False
    )
    Pipeline(FakeModel(), FakeModel(weak_reply), cfg).run(load_seeds(["How do I keep a starter alive?"]))
    sft, dpo = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    assert main(["export", str(tmp_path / "run"), "--out", str(sft)]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(dpo), "--kind", "dpo"]) == 0
    base = [
        "--model",
        str(model_dir),
        "--max-steps",
        "1",
        "--device",
        "cpu",
        "--grad-accum",
        "1",
        "--max-length",
        "128",
    ]
    assert main(["train", "--data", str(sft), "--output-dir", str(tmp_path / "o1"), *base]) == 0
    assert "trained 1 step(s)" in capsys.readouterr().out
    assert (tmp_path / "o1" / "adapter_config.json").is_file()
    assert (
        main(["train", "--kind", "dpo", "--data", str(dpo), "--output-dir", str(tmp_path / "o2"), *base]) == 0
    )
    assert "trained 1 step(s)" in capsys.readouterr().out
    assert main(["train", "--data", str(sft), "--output-dir", str(tmp_path / "o1"), *base]) == 2  # not empty
