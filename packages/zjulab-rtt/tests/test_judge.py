"""The rubric judge against a failing OpenAI-compatible server, cut-off answers and its cache."""

import time

import pytest

from zjulab.common.chat import ChatResult, OpenAIChatModel
from zjulab.common.errors import RemoteModelError
from zjulab.common.testing import ChatServer, ScriptedChatModel
from zjulab.rtt import Rubric, RubricReward

BLUE = [Rubric.judge("Mentions the colour blue.")]


def _answer(conv):
    response = conv[-1]["content"].split("Response:\n", 1)[1]
    return "YES" if "blue" in response else "NO"


@pytest.fixture()
def server():
    with ChatServer(ScriptedChatModel(_answer, model_id="judge"), models=["judge"]) as srv:
        yield srv


def _client(server, **kw):
    kw.setdefault("max_retries", 1)
    return OpenAIChatModel("judge", base_url=server.url, backoff=0.01, **kw)


def _responses(n):
    return [f"answer {i}: {'blue' if i % 2 else 'red'} sky" for i in range(n)]


def test_a_partly_failed_batch_keeps_its_answers(server):
    reward = RubricReward(_client(server), judge_batch_size=8)
    texts = _responses(6)
    server.fail_if(lambda body: "answer 3:" in str(body["messages"]), 500)  # one poisoned question
    with pytest.raises(RemoteModelError):
        reward.score(["q"] * 6, texts, [BLUE] * 6)
    server.clear()  # the server recovers
    batch = reward.score(["q"] * 6, texts, [BLUE] * 6)
    assert batch.scores.flatten().tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
    # only the unanswered question is sent again
    assert len(server.requests) == 1 and "answer 3:" in str(server.requests[0]["messages"])
    assert reward.cache_hits == 5


def test_rate_limits_and_malformed_bodies_are_retried(server):
    reward = RubricReward(_client(server, max_retries=2))
    server.fail_next(1, 429, retry_after=0.2)
    t0 = time.monotonic()
    assert reward.score(["q"], ["a blue sea"], [BLUE]).scores.tolist() == [[1.0]]
    assert time.monotonic() - t0 >= 0.2  # Retry-After was waited out
    server.fail_next(1, 200, body=b'{"choices": [')
    assert reward.score(["q"], ["a red sea"], [BLUE]).scores.tolist() == [[-1.0]]
    assert len(server.requests) == 4 and reward.judge_calls == 2


def test_a_slow_server_fails_in_bounded_time_and_loses_nothing(server):
    reward = RubricReward(_client(server, max_retries=0, timeout=0.3), judge_batch_size=4)
    texts = _responses(2)
    server.fail_if(lambda body: "answer 1:" in str(body["messages"]), 200, delay=1.5, times=1)
    t0 = time.monotonic()
    with pytest.raises(RemoteModelError):
        reward.score(["q"] * 2, texts, [BLUE] * 2)
    assert time.monotonic() - t0 < 1.2  # the timeout, not the server's delay
    before = len(server.requests)
    assert reward.score(["q"] * 2, texts, [BLUE] * 2).scores.flatten().tolist() == [-1.0, 1.0]
    assert len(server.requests) - before == 1  # the answered one is not asked again


def test_a_judge_without_generate_results_keeps_what_it_received():
    class PlainJudge:  # only ``generate``, raising with the answers it got attached
        model_id = "plain"

        def __init__(self):
            self.asked = 0
            self.fail = True

        def generate(self, conversations, **sampling):
            self.asked += len(conversations)
            results = [ChatResult(_answer(c), "stop") for c in conversations]
            if self.fail:
                self.fail = False
                results[-1] = ChatResult(error=RemoteModelError("down"))
                err = RemoteModelError("1 of 2 got no answer")
                err.results = results
                raise err
            return [r.text for r in results]

    judge = PlainJudge()
    reward = RubricReward(judge)
    with pytest.raises(RemoteModelError):
        reward.score(["q"] * 2, _responses(2), [BLUE] * 2)
    assert reward.score(["q"] * 2, _responses(2), [BLUE] * 2).scores.flatten().tolist() == [-1.0, 1.0]
    assert judge.asked == 3  # two, then only the unanswered one


def test_no_verdict_from_an_answer_cut_off_at_the_length_limit():
    # a reasoning judge whose chat template opened <think>: the text has no marker, but the answer
    # stopped at the token limit inside its reasoning
    cut = ChatResult("Let me check. The answer is YES if it says blue, otherwise no. It says", "length")
    judge = ScriptedChatModel([cut, "</think>\n\nYES"], model_id="r1")
    reward = RubricReward(judge)
    assert reward.score(["q"], ["a blue sky"], [BLUE]).scores.tolist() == [[-1.0]]
    assert reward.judge_unreadable == 1
    # not cached: asked again, and the finished answer is read
    assert reward.score(["q"], ["a blue sky"], [BLUE]).scores.tolist() == [[1.0]]
    assert len(judge.calls) == 2


def test_a_changed_judge_or_question_is_asked_again():
    first = ScriptedChatModel(lambda conv: "YES", model_id="judge-a")
    reward = RubricReward(first)
    assert reward.score(["q"], ["r"], [BLUE]).scores.tolist() == [[1.0]]
    reward.score(["q"], ["r"], [BLUE])
    assert len(first.calls) == 1  # cached
    reward.judge = ScriptedChatModel(lambda conv: "NO", model_id="judge-b")  # another judge
    assert reward.score(["q"], ["r"], [BLUE]).scores.tolist() == [[-1.0]]
    reward.judge_max_new_tokens = 2048  # room for longer reasoning: a new answer
    reward.judge = ScriptedChatModel(lambda conv: "YES", model_id="judge-b")
    assert reward.score(["q"], ["r"], [BLUE]).scores.tolist() == [[1.0]]

    class Stricter(RubricReward):  # another question for the same triple
        def judge_conversation(self, prompt, response, criterion):
            conv = super().judge_conversation(prompt, response, criterion)
            conv[0]["content"] += " Be strict."
            return conv

    strict = Stricter(reward.judge)
    strict._cache = reward._cache  # even sharing a cache, the new question is not served the old verdict
    before = len(reward.judge.calls)
    strict.score(["q"], ["r"], [BLUE])
    assert len(reward.judge.calls) == before + 1
