"""A scripted strong/weak model that answers every stage prompt in the expected JSON."""

import json
import re
import threading

from zjulab.common.chat import Usage
from zjulab.common.errors import RemoteModelError


def strong_reply(conv):
    text = conv[-1]["content"]
    if text.startswith("That answer could not be used"):
        return "Still no JSON, sorry."
    if text.startswith("Here is a request"):
        seed = text.split("\n")[1]
        n = int(re.search(r"Write (\d+) new", text).group(1))
        if "BROKEN" in seed:
            return "Sure! Here are some great questions for you."
        return json.dumps({"questions": [f"Q{i} on {seed}?" for i in range(1, n + 1)]})
    if text.startswith("Question:") and "Is this a clear" in text:
        return json.dumps({"keep": "DROP" not in text, "reason": "checked"})
    if "List the kinds of requirements" in text:
        return '{"categories": {"Audience": ["kids", "adults"], "Format": ["a list"]}}'
    if "Rewrite the question" in text:
        q = text.split("\n")[1]
        n = int(re.search(r"exactly (\d+) items", text).group(1))
        return json.dumps({"levels": [f"L{i}: {q}" for i in range(1, n + 1)]})
    if "Are the requirements of this instruction" in text:
        return '{"keep": true, "reason": "fine"}'
    if "Go through the requirements" in text:
        return '{"steps": ["audience: addressed", "format: a list"]}'
    if "Pick one to three of the candidate constraints" in text:
        instruction = text.split("\n")[1]
        first = text.split("Candidate constraints:\n- ")[1].split("\n")[0]
        return json.dumps({"instruction": f"{instruction} The answer must follow these constraints: {first}"})
    if "Does the candidate answer" in text:
        return '{"follows": false, "feedback": "It ignores the audience."}'
    return f"Answer to <{text}>"


def weak_reply(conv):
    return f"weak answer to <{conv[-1]['content']}>"


class FakeModel:
    """ChatModel with token usage (one token per word) and optional failure injection."""

    def __init__(self, reply=strong_reply, fail_on=None, remote_failures=0, remote_status=503):
        self.reply = reply
        self.fail_on = fail_on  # callable(conv) -> bool: raise RuntimeError (a crash)
        self.remote_failures = remote_failures
        self.remote_status = remote_status  # 503: unavailable (an outage); 400: refused
        self.usage = Usage()
        self.asked = []
        self._lock = threading.Lock()

    def generate(self, conversations, **sampling):
        with self._lock:
            if self.remote_failures:
                self.remote_failures -= 1
                err = RemoteModelError(f"HTTP {self.remote_status}: no")
                err.status = self.remote_status
                raise err
        out = []
        for conv in conversations:
            if self.fail_on is not None and self.fail_on(conv):
                raise RuntimeError("simulated crash")
            with self._lock:
                self.asked.append(conv[-1]["content"])
            out.append(self.reply(conv))
        prompt_tokens = sum(len(m["content"].split()) for c in conversations for m in c)
        self.usage.add(len(conversations), prompt_tokens, sum(len(o.split()) for o in out))
        return out
