"""The judge, evaluation and generation paths against a served model that fails (ChatServer)."""

import json
import re

import pytest

from zjulab.common.chat import ChatResult, OpenAIChatModel
from zjulab.common.testing import ChatServer, ScriptedChatModel
from zjulab.serl import CopelandJudge, SERLRemoteError, pairwise_win_rate
from zjulab.serl.answers import AnswerStore
from zjulab.serl.cli import main

RESPONSES = [" ".join(["ten"] * 10), " ".join(["eleven"] * 11), " ".join(["twelve"] * 12)]


def longer_wins(conv):
    text = conv[-1]["content"]
    a = re.search(r"## Answer 1\n(.*?)\n\n## Answer 2", text, re.S).group(1)
    b = re.search(r"## Answer 2\n(.*?)\n\n## Your verdict", text, re.S).group(1)
    return "\\boxed{1}" if len(a.split()) >= len(b.split()) else "\\boxed{2}"


def poisoned(body):
    """Requests showing the 12-word answer first fail on the server."""
    return "## Answer 1\ntwelve" in body["messages"][-1]["content"]


def client(server, **kw):
    return OpenAIChatModel("judge", base_url=server.url, max_retries=0, backoff=0.01, timeout=10, **kw)


def test_a_failed_batch_keeps_its_answers_and_a_retry_asks_only_the_rest():
    with ChatServer(ScriptedChatModel(longer_wins), models=["judge"]) as server:
        judge = CopelandJudge(client(server))
        server.fail_if(poisoned, 500)
        with pytest.raises(
            SERLRemoteError, match=r"2 of 6 request\(s\) got no answer.*4 answer\(s\) received"
        ):
            judge.judge("Say it.", RESPONSES)
        assert len(server.requests) == 6 and len(judge.answers) == 4
        server.clear()
        result = judge.judge("Say it.", RESPONSES)
        assert len(server.requests) == 2  # only the two unanswered
        assert all(poisoned(b) for b in server.requests)
    # the same verdicts as a judge that never failed
    clean = CopelandJudge(ScriptedChatModel(longer_wins)).judge("Say it.", RESPONSES)
    assert result.verdicts == clean.verdicts and result.actor_rewards.tolist() == clean.actor_rewards.tolist()


def test_retry_after_and_malformed_bodies_lose_nothing():
    with ChatServer(ScriptedChatModel(longer_wins), models=["judge"]) as server:
        server.fail_next(1, 429, retry_after=0.05)
        server.fail_next(1, 200, body=b'{"choices": [')
        c = OpenAIChatModel(
            "judge", base_url=server.url, max_retries=3, backoff=0.01, timeout=10, concurrency=1
        )
        result = CopelandJudge(c).judge("Say it.", RESPONSES)
    assert None not in result.verdicts and len(result.verdicts) == 6


def test_a_judge_answer_cut_at_the_token_limit_has_no_verdict():
    cut = ChatResult("\\boxed{1} if Answer 1 is better, \\boxed{2} if", finish_reason="length")

    def reply(conv):
        return cut if "## Answer 1\nten" in conv[-1]["content"] else longer_wins(conv)

    with ChatServer(ScriptedChatModel(reply), models=["judge"]) as server:
        result = CopelandJudge(client(server, on_truncation="return")).judge("Say it.", RESPONSES)
    assert [s.first for s, v in zip(result.slots, result.verdicts) if v is None] == [0, 0]
    assert result.finished == [v is not None for v in result.verdicts]
    assert result.diagnostics.invalid == 2 and all(result.judge_rewards[[0, 2]] == -1)
    # evaluation: the item whose only judgment was cut off has no verdict
    with ChatServer(ScriptedChatModel(reply), models=["judge"]) as server:
        wr = pairwise_win_rate(
            ["Say it.", "Say it."], [RESPONSES[1], RESPONSES[1]], [RESPONSES[0], RESPONSES[2]],
            client(server, on_truncation="return"), both_orders=False,
        )  # fmt: skip
    assert [r.verdicts for r in wr.records] == [[None], [0.0]] and wr.invalid == 1


def test_the_answer_file_survives_the_process_and_is_keyed_by_everything(tmp_path):
    path = tmp_path / "answers.jsonl"
    scripted = ScriptedChatModel(longer_wins)
    CopelandJudge(scripted, answers=AnswerStore(path)).judge("Say it.", RESPONSES)
    assert len(scripted.calls) == 6
    again = ScriptedChatModel(longer_wins)
    CopelandJudge(again, answers=AnswerStore(path)).judge("Say it.", RESPONSES)
    assert again.calls == []  # every answer came from the file
    CopelandJudge(again, answers=AnswerStore(path)).judge("Say it again.", RESPONSES)
    assert len(again.calls) == 6  # another prompt is asked anew
    CopelandJudge(again, answers=AnswerStore(path)).judge("Say it.", RESPONSES, temperature=0.7)
    assert len(again.calls) == 12  # other sampling settings too
    other = ScriptedChatModel(longer_wins, model_id="other-judge")
    CopelandJudge(other, answers=AnswerStore(path)).judge("Say it.", RESPONSES)
    assert len(other.calls) == 6  # and another model
    # a line torn by a kill is skipped, the rest still serves
    with open(path, "a") as fh:
        fh.write('{"key": "abc", "te')
    assert len(AnswerStore(path)) == 24
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"mine": 1}\n')
    with pytest.raises(Exception, match="not a zjulab-serl answers file"):
        AnswerStore(notes)


def test_repeated_judge_prompts_are_separate_samples():
    """The K/2 identical prompts of a pair are separate samples, not one answer reused."""
    answers = iter(["\\boxed{1}", "\\boxed{2}"] * 12)
    judge = CopelandJudge(ScriptedChatModel(lambda conv: next(answers)))
    from zjulab.serl import JudgeConfig

    judge.config = JudgeConfig(num_judgments=4)
    result = judge.judge("Say it.", RESPONSES[:2])
    assert result.verdicts == [1, 2, 1, 2]


def test_judge_command_against_a_failing_server_resumes(tmp_path, capsys):
    groups = tmp_path / "groups.jsonl"
    groups.write_text(json.dumps({"instruction": "Say it.", "responses": RESPONSES}) + "\n")
    out = tmp_path / "ranked.json"
    with ChatServer(ScriptedChatModel(longer_wins), models=["judge"]) as server:
        server.fail_if(poisoned, 400)  # a 4xx is not retried
        argv = ["judge", str(groups), "--base-url", server.url, "--model", "judge", "-o", str(out)]
        assert main(argv) == 2
        assert "4 answer(s) received are kept in" in capsys.readouterr().err
        assert not out.exists() and (tmp_path / "ranked.json.answers.jsonl").is_file()
        server.clear()
        assert main(argv) == 0
        assert len(server.requests) == 2
    assert not (tmp_path / "ranked.json.answers.jsonl").exists()  # its work done, the answer file goes
    assert len(json.loads(out.read_text())[0]["judgments"]) == 6


def test_output_files_replace_only_earlier_outputs(tmp_path, capsys):
    groups = tmp_path / "groups.jsonl"
    groups.write_text(json.dumps({"instruction": "Say it.", "responses": RESPONSES}) + "\n")
    mine = tmp_path / "mine.json"
    mine.write_text('{"precious": true}\n')
    with ChatServer(ScriptedChatModel(longer_wins), models=["judge"]) as server:
        base = ["judge", str(groups), "--base-url", server.url, "--model", "judge"]
        assert main([*base, "-o", str(mine)]) == 2
        assert "not an earlier output" in capsys.readouterr().err
        assert mine.read_text() == '{"precious": true}\n' and server.requests == []
        out = tmp_path / "ranked.json"
        assert main([*base, "-o", str(out)]) == 0
        assert main([*base, "-o", str(out)]) == 0  # an earlier output is replaced
        assert main([*base, "-o", str(mine), "--overwrite"]) == 0
        instr = tmp_path / "instructions.json"
        instr.write_text(json.dumps(["Say hi"]))
        gen = ["generate", str(instr), "--base-url", server.url, "--model", "judge"]
        assert main([*gen, "-o", str(instr)]) == 2  # never over the input (or any file) unasked
        assert json.loads(instr.read_text()) == ["Say hi"]
