"""The relation-aware layers carry the schema-linking graph: a task solvable only through relations."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from zjulab.common.testing import tiny_encoder  # noqa: E402
from zjulab.hiesql.config import EncoderConfig  # noqa: E402
from zjulab.hiesql.encoder import HieSqlEncoder  # noqa: E402
from zjulab.hiesql.linking import RELATIONS  # noqa: E402

R = {name: k for k, name in enumerate(RELATIONS)}
# [CLS] q q [SEP] table_a name_a table_b name_b: two columns spelled the same in two tables
COL_A, COL_B, TAB_A, TAB_B, QWORD = 5, 7, 4, 6, 1


def _batch(labels: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    n = len(labels)
    rel = torch.zeros((n, 8, 8), dtype=torch.long)
    for b in range(n):
        for col, tab in ((COL_A, TAB_A), (COL_B, TAB_B)):
            rel[b, col, tab] = R["column_of"]
            rel[b, tab, col] = R["column_of_rev"]
        target = COL_A if labels[b] == 0 else COL_B
        rel[b, QWORD, target] = R["exact_match"]  # the utterance links to this column only
        rel[b, target, QWORD] = R["exact_match_rev"]
    if mode == "zeroed":
        rel.zero_()
    elif mode == "shuffled":
        rel = rel[torch.randperm(n, generator=gen)]
    return rel


def _train_and_score(mode: str) -> float:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    base, tok = tiny_encoder(seed=3)
    enc = HieSqlEncoder(base, EncoderConfig(rat_layers=1, rat_heads=4, dropout=0.0))
    head = torch.nn.Linear(enc.hidden_size, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    ids = torch.randint(5, min(tok.vocab_size, 200), (1, 8), generator=gen)
    ids[0, COL_B] = ids[0, COL_A]  # same column name
    ids[0, TAB_B] = ids[0, TAB_A] + 1

    def logits(rel: torch.Tensor) -> torch.Tensor:
        n = rel.shape[0]
        states = enc(
            ids.expand(n, 8), torch.ones(n, 8, dtype=torch.long), torch.zeros(n, 8, dtype=torch.long), rel
        )
        return head(states[:, [COL_A, COL_B]]).squeeze(-1)

    for _ in range(60):
        labels = torch.randint(0, 2, (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(logits(_batch(labels, mode, gen)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        labels = torch.randint(0, 2, (400,), generator=gen)
        pred = logits(_batch(labels, mode, gen)).argmax(-1)
    return float((pred == labels).float().mean())


def test_relations_decide_the_linked_column():
    with_rel = _train_and_score("real")
    zeroed = _train_and_score("zeroed")
    shuffled = _train_and_score("shuffled")
    assert with_rel >= 0.95, with_rel
    assert abs(zeroed - 0.5) < 0.1 and abs(shuffled - 0.5) < 0.1, (zeroed, shuffled)


def test_zero_initialised_relation_embeddings_receive_gradient():
    base, _tok = tiny_encoder(seed=3)
    enc = HieSqlEncoder(base, EncoderConfig(rat_layers=1, rat_heads=4, dropout=0.0))
    rel = _batch(torch.tensor([0, 1]), "real", torch.Generator().manual_seed(0))
    ids = torch.randint(5, 100, (2, 8))
    out = enc(ids, torch.ones(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long), rel)
    probe = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(1))
    (out[:, [COL_A, COL_B]] @ probe).sum().backward()  # (a plain sum is constant after LayerNorm)
    attn = enc.layers[0].attn
    assert attn.rel_k.weight.detach().abs().sum().item() == 0.0  # starts at zero ...
    assert attn.rel_k.weight.grad[R["exact_match_rev"]].abs().sum().item() > 0  # ... and is reached
    assert attn.rel_v.weight.grad[R["exact_match_rev"]].abs().sum().item() > 0


def test_linked_schema_states_reach_the_decoder_prefix():
    import numpy as np

    from zjulab.hiesql.encoder_input import SEGMENTS, EncoderInput, prefix_positions

    s = {name: k for k, name in enumerate(SEGMENTS)}
    # [CLS] q q [SEP] h h h h [SEP] schema x 8, the question linked to schema position 14 only
    segs = [s["special"], s["question"], s["question"], s["special"]] + [s["history"]] * 4
    segs += [s["special"]] + [s["schema"]] * 8
    n = len(segs)
    rel = np.zeros((n, n), dtype=np.int64)
    rel[14, 1] = R["exact_match_rev"]
    rel[1, 14] = R["exact_match"]
    rel[15, 14] = R["column_of"]  # a schema-schema edge does not make 15 linked
    enc = EncoderInput(list(range(n)), segs, list(range(n)), rel, graph=None)
    assert prefix_positions(enc, 4) == [1, 2, 4, 14]  # question, the linked column, then history
    assert prefix_positions(enc, 3) == [1, 2, 14]


def test_parsers_saved_before_prefix_select_keep_first_positions(tmp_path):
    import json

    from zjulab.common.testing import tiny_causal_lm
    from zjulab.hiesql.config import DecoderConfig, ParserConfig
    from zjulab.hiesql.parser import HieSqlParser

    enc, etok = tiny_encoder(seed=1)
    lm, ltok = tiny_causal_lm(seed=1)
    cfg = ParserConfig(
        encoder=EncoderConfig(rat_heads=4, rat_layers=1, dropout=0.0),
        decoder=DecoderConfig(lora=False, num_beams=1, max_new_tokens=4, prefix_tokens=8),
    )
    parser = HieSqlParser.from_modules(enc, etok, lm, ltok, cfg)
    assert parser.config.decoder.prefix_select == "linked"
    parser.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "hiesql.json").read_text())
    del meta["config"]["decoder"]["prefix_select"]
    (tmp_path / "p" / "hiesql.json").write_text(json.dumps(meta))
    assert HieSqlParser.load(tmp_path / "p", device="cpu").config.decoder.prefix_select == "first"


def _parser_task_accuracy(mode: str) -> float:
    """Encoder + decoder trained end to end: the SQL's table is decided by the relations alone."""
    from zjulab.common.testing import tiny_causal_lm
    from zjulab.hiesql.config import DecoderConfig, ParserConfig
    from zjulab.hiesql.encoder import collate_encoder_inputs
    from zjulab.hiesql.encoder_input import SEGMENTS, EncoderInput, prefix_positions
    from zjulab.hiesql.parser import HieSqlParser

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    enc_m, etok = tiny_encoder(seed=1)
    lm, ltok = tiny_causal_lm(seed=1)
    cfg = ParserConfig(
        encoder=EncoderConfig(rat_heads=4, rat_layers=1, dropout=0.0),
        decoder=DecoderConfig(lora=False, prefix_tokens=4, text_prompt=False),
    )
    parser = HieSqlParser.from_modules(enc_m, etok, lm, ltok, cfg)
    seg = {n: k for k, n in enumerate(SEGMENTS)}
    segs = [seg["special"], seg["question"], seg["question"], seg["special"]] + [seg["schema"]] * 4
    ids = torch.randint(5, 100, (8,), generator=gen).tolist()
    ids[COL_B] = ids[COL_A]
    targets = [ltok(" SELECT name FROM singer", add_special_tokens=False)["input_ids"],
               ltok(" SELECT name FROM band", add_special_tokens=False)["input_ids"]]  # fmt: skip
    assert targets[0] != targets[1]

    def inputs(labels: torch.Tensor) -> list[EncoderInput]:
        rels = _batch(labels, mode, gen).numpy()
        return [EncoderInput(ids, segs, list(range(8)), rels[b], graph=None) for b in range(len(labels))]

    def loss_of(batch: list[EncoderInput], tgts: list[list[int]]) -> torch.Tensor:
        t = collate_encoder_inputs(batch, 0)
        states = parser.encoder(**t)
        pos = [prefix_positions(e, cfg.decoder.prefix_tokens) for e in batch]
        return parser.decoder.loss(states, t["attention_mask"], [[] for _ in batch], tgts, pos)

    params = [p for p in [*parser.encoder.parameters(), *parser.decoder.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    parser.encoder.train()
    parser.decoder.train()
    for _ in range(40):
        labels = torch.randint(0, 2, (16,), generator=gen)
        loss = loss_of(inputs(labels), [targets[int(y)] for y in labels])
        opt.zero_grad()
        loss.backward()
        opt.step()
    parser.encoder.eval()
    parser.decoder.eval()
    hits = 0
    with torch.no_grad():
        labels = torch.randint(0, 2, (60,), generator=gen)
        for x, y in zip(inputs(labels), labels):
            right = loss_of([x], [targets[int(y)]])
            wrong = loss_of([x], [targets[1 - int(y)]])
            hits += int(right < wrong)
    return hits / len(labels)


def test_parser_learns_only_through_relations():
    real = _parser_task_accuracy("real")
    zeroed = _parser_task_accuracy("zeroed")
    shuffled = _parser_task_accuracy("shuffled")
    assert real >= 0.9, real
    assert zeroed <= 0.7 and shuffled <= 0.7, (zeroed, shuffled)
