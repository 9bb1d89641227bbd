"""``zjulab-conifer demo`` end to end, offline: every stage runs, and what it prints (the stage
table, the set-aside and salvage counts, the easy-to-hard conversation) is what it wrote.

The embedded SmolLM2-135M takes minutes on two cores (the nox ``demo`` session runs it); here the
same command runs on a double that answers each stage's prompt and, like a real model, stops at
``max_new_tokens`` (counted in words) with ``finish_reason="length"``.
"""

import json
import re

from zjulab.common.testing import ScriptedChatModel
from zjulab.conifer.cli import DEMO_SEEDS, main

from .fakes import strong_reply


class WordLimited(ScriptedChatModel):
    def __init__(self):
        super().__init__(strong_reply, model_id="word-limited")

    def generate_results(self, conversations, **sampling):
        out = super().generate_results(conversations, **sampling)
        limit = sampling["max_new_tokens"]
        for r in out:
            words = r.text.split(" ")
            if len(words) > limit:
                r.text, r.finish_reason = " ".join(words[:limit]), "length"
        return out


ROW = re.compile(r"^(\w+)\s+" + r"\s+".join([r"(\d+)"] * 6) + r"\s+[\d.]+\s+(\d+)\s+(\d+)\s+(\d+)$")


def table(out):
    rows = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            name, *nums = m.groups()
            rows[name] = dict(
                zip(
                    ["in", "out", "filt", "aside", "failed", "cached", "calls", "tin", "tout"], map(int, nums)
                )
            )
    return rows


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_demo_runs_every_stage_and_reports_what_it_wrote(tmp_path, monkeypatch, capsys):
    import zjulab.common.defaults as defaults

    model = WordLimited()
    monkeypatch.setattr(defaults, "default_chat_model", lambda **kw: model)
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    stats = json.loads((out_dir / "stats.json").read_text())
    rows = table(out)
    # every stage of conifer mode ran and finished, in order
    assert list(rows) == manifest["stages"] == manifest["stages_done"] == list(stats)
    assert manifest["complete"] is True and len(manifest["stages"]) == 10
    assert rows["seeds"]["in"] == len(DEMO_SEEDS)
    previous_out = len(DEMO_SEEDS)
    total_aside = 0
    for i, name in enumerate(manifest["stages"], 1):
        row, st = rows[name], stats[name]
        assert (row["in"], row["out"], row["filt"], row["aside"], row["failed"], row["cached"]) == (
            st["inputs"],
            st["outputs"],
            st["filtered"],
            st["set_aside"],
            st["failed"],
            st["resumed"],
        )
        assert row["in"] == previous_out  # each stage reads what the one before wrote
        assert row["out"] == len(lines(out_dir / f"{i:02d}_{name}.output.jsonl"))
        assert row["aside"] == len(lines(out_dir / f"{i:02d}_{name}.setaside.jsonl"))
        assert row["calls"] == st["usage"].get("calls", 0)
        previous_out = row["out"]
        total_aside += row["aside"]
    assert sum(r["calls"] for r in rows.values()) == len(model.calls)
    records = lines(out_dir / f"{len(rows):02d}_external_feedback.output.jsonl")
    # the 32-token answers were cut at the limit; the demo keeps them and says how many
    salvaged = [r for r in records if r.get("salvaged")]
    assert salvaged and all(
        "cut off at the token limit (32 new tokens)" in r["salvaged"]["answer"] for r in salvaged
    )
    assert f"{len(salvaged)} of {len(records)} record(s) built from answers cut off" in out
    if total_aside:
        assert f"{total_aside} item(s) set aside" in out
    else:
        assert "set aside" not in out
    # the printed conversation is one question's general levels in order, with their answers
    m = re.search(r"Easy-to-hard conversation \((\d+) levels, easiest first\):\n((?:  \[.*\n)+)", out)
    shown = re.findall(r"  \[(user|assistant)\] (.*)", m.group(2))
    assert len(shown) == 2 * int(m.group(1)) and int(m.group(1)) == 3
    by_instruction = {r["instruction"]: r for r in records}
    users = [text for role, text in shown if role == "user"]
    levels = [by_instruction[u]["level"] for u in users]
    assert levels == [1, 2, 3] and {by_instruction[u]["kind"] for u in users} == {"general"}
    assert len({by_instruction[u]["query"] for u in users}) == 1
    answers = [text for role, text in shown if role == "assistant"]
    assert answers == [" ".join(by_instruction[u]["answer"].split())[:400] for u in users]

    # run again on the same folder: every answer is replayed, no model call is made
    again = WordLimited()
    monkeypatch.setattr(defaults, "default_chat_model", lambda **kw: again)
    assert main(["demo", "--out-dir", str(out_dir)]) == 0
    rerun = table(capsys.readouterr().out)
    assert again.calls == [] and sum(r["calls"] for r in rerun.values()) == 0
    assert {k: (v["in"], v["out"], v["aside"]) for k, v in rerun.items()} == {
        k: (v["in"], v["out"], v["aside"]) for k, v in rows.items()
    }
    assert lines(out_dir / f"{len(rows):02d}_external_feedback.output.jsonl") == records


def test_demo_refuses_an_existing_folder_of_user_files(tmp_path, monkeypatch, capsys):
    import zjulab.common.defaults as defaults

    monkeypatch.setattr(defaults, "default_chat_model", lambda **kw: WordLimited())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["demo", "--out-dir", str(mine)]) == 2
    assert "not a zjulab-conifer run" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
