from __future__ import annotations

import pytest
import torch

from zjulab.common.scorers import YesNoScorer
from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import RouterConfig, Skill, SkillRouter
from zjulab.skillrouter.models import RERANK_INSTRUCTION

SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)


class Recording:
    def __init__(self, inner):
        self.inner, self.pairs, self.model_id = inner, [], inner.model_id

    def score(self, pairs, batch_size=16):
        self.pairs.extend(pairs)
        return self.inner.score(pairs, batch_size=batch_size)


def test_yes_no_rerank_score_equals_hand_computation(tiny_causal_lm):
    model, tok = tiny_causal_lm
    skills = [
        Skill(name="img-tools", description="Images.", body="resize png images", id="img"),
        Skill(name="pdf-tools", description="PDF.", body="merge pdf pages", id="pdf"),
    ]
    scorer = YesNoScorer(model, tok, instruction=RERANK_INSTRUCTION, max_length=512, device="cpu")
    router = SkillRouter(HashingEncoder(64), scorer, RouterConfig(retrieve_k=2, rerank_k=2)).index(skills)
    query = "resize images"
    routed = {r.skill.id: r.rerank_score for r in router.route(query, k=2)}

    user = f"<Instruct>: {RERANK_INSTRUCTION}\n<Query>: {query}\n<Document>: img-tools | Images. | resize png images"
    text = tok.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    hand = float(logits[tok.convert_tokens_to_ids("yes")] - logits[tok.convert_tokens_to_ids("no")])
    assert routed["img"] == pytest.approx(hand, abs=1e-4)
    assert routed["img"] != pytest.approx(routed["pdf"], abs=1e-6)


def test_reranker_document_uses_the_500_2000_budget(tiny_causal_lm):
    model, tok = tiny_causal_lm
    long = Skill(name="pdf-tools", description="D" * 600, body="merge pdf pages. " * 200, id="pdf")
    rec = Recording(YesNoScorer(model, tok, max_length=64, device="cpu"))
    SkillRouter(HashingEncoder(64), rec, RouterConfig(retrieve_k=1, rerank_k=1)).index([long]).route(
        "merge", k=1
    )
    assert rec.pairs == [("merge", "pdf-tools | " + "D" * 500 + " | " + ("merge pdf pages. " * 200)[:2000])]
