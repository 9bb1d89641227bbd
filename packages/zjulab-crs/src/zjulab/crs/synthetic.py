"""A small synthetic e-commerce pre-sales data set in U-NEED's format.

U-NEED itself is research-only and given on application, so the library ships a spec
(``data/synthetic_spec.json``: five categories, their attributes and values, product types and
utterance templates) and expands it deterministically into items with knowledge tuples, users
with behaviours, and annotated dialogues. The same seed gives the same corpus on every
platform (only :class:`random.Random` is used). Everything is invented; the texts are English.

Each dialogue follows the pre-sales pattern of U-NEED: the user states a need (a product type,
sometimes a value), the assistant asks about attributes in an order set by the product type (value-less
questions or "A or B?" with both values annotated), the user answers, the assistant sends a
link to an item (with a candidate list) and explains it; sometimes the user gives feedback and
a second item follows. Explanations are sometimes replaced by worse ones (generic, wrong values,
off-topic); every explanation carries a quality score in ``Dialogue.quality`` for task 5.
Some values are shared by two attributes (``large`` screen vs ``large`` battery) so that a
lexicon cannot resolve every mention.

Splits do not memorise: every template list of the spec with two or more entries is divided
(every third template, the second of a pair, is held out), train dialogues use only the kept templates and
valid/test dialogues only the held-out ones; a held-out dialogue any of whose utterances is an
exact or near duplicate (same text after lower-casing and dropping punctuation and spaces) of a
train utterance is drawn again (up to 20 times). What overlap remains is reported by
:func:`~zjulab.crs.samples.split_overlap`.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from zjulab.crs.dialogue import Attribute, Behaviour, Dialogue, Item, Utterance
from zjulab.crs.errors import CrsConfigError, DataFormatError
from zjulab.crs.loaders import UNeedCorpus

__all__ = ["SyntheticConfig", "load_spec", "synthetic_corpus"]

logger = logging.getLogger(__name__)

_BASE_DAY = datetime(2024, 1, 1, 9, 0, 0)


@dataclass
class SyntheticConfig:
    """Size and seed of the synthetic corpus.

    Args:
        dialogues_per_category: Dialogues per category; 60 x 5 categories keeps every task's
            test split in the hundreds of samples while the corpus stays under 1 MB.
        items_per_category: Items per category; 40 leaves room for 20-item candidate lists.
        users: Users, spread round-robin over the categories.
        behaviours_per_user: Behaviour records per user.
        candidates: Candidate list length of a recommendation (U-NEED uses 20).
        degrade_rate: Share of explanations replaced by a worse response (task 5 needs a
            spread of quality scores).
        feedback_rate: Share of dialogues with user feedback and a second recommendation.
        split: Train/valid/test shares, applied within each category.
        seed: Random seed.
    """

    dialogues_per_category: int = 60
    items_per_category: int = 40
    users: int = 100
    behaviours_per_user: int = 10
    candidates: int = 20
    degrade_rate: float = 0.4
    feedback_rate: float = 0.35
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dialogues_per_category", "items_per_category", "users", "candidates"):
            if getattr(self, name) < 1:
                raise CrsConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.candidates > self.items_per_category:
            raise CrsConfigError(
                f"candidates={self.candidates} > items_per_category={self.items_per_category}"
            )
        for name in ("degrade_rate", "feedback_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise CrsConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.split) != 3 or any(s < 0 for s in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise CrsConfigError(f"split must be three non-negative shares summing to 1, got {self.split}")


def load_spec(path: str | Path | None = None) -> dict[str, Any]:
    """Read the synthetic-data spec (the packaged one by default).

    Raises:
        DataFormatError: The spec lacks a required section.
    """
    if path is None:
        text = resources.files("zjulab.crs").joinpath("data/synthetic_spec.json").read_text("utf-8")
        where = "synthetic_spec.json"
    else:
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    spec = json.loads(text)
    for key in ("categories", "need_templates", "explain_templates", "generic_responses", "recommend_text"):
        if key not in spec:
            raise DataFormatError(f"{where}: missing section {key!r}")
    for name, cat in spec["categories"].items():
        for key in (
            "category_id",
            "products",
            "attributes",
            "ask_order",
            "ask_templates",
            "answer_templates",
        ):
            if key not in cat:
                raise DataFormatError(f"{where}: category {name!r} lacks {key!r}")
        unknown = set(cat["ask_order"]) - set(cat["attributes"])
        if unknown:
            raise DataFormatError(f"{where}: category {name!r} asks unknown attributes {sorted(unknown)}")
    return dict(spec)


class _Builder:
    """Stateful helper that appends annotated utterances to one dialogue."""

    def __init__(self, start: datetime) -> None:
        self.turns: list[Utterance] = []
        self.clock = start

    def add(
        self,
        role: str,
        act: str,
        parts: list[tuple[str, str | None]],
        *,
        no_span: list[str] | None = None,
        rec: tuple[str, str, list[str]] | None = None,
    ) -> Utterance:
        """Append an utterance built from ``(text, attribute key or None)`` parts."""
        text, attrs = "", []
        for piece, key in parts:
            if key is not None:
                attrs.append(Attribute(key, piece, len(text), len(text) + len(piece)))
            text += piece
        for key in no_span or []:
            attrs.append(Attribute(key, "", -1, -1))
        self.clock += timedelta(seconds=20 + 7 * len(self.turns))
        utt = Utterance(
            seq_no=len(self.turns) + 1,
            role=role,  # type: ignore[arg-type]
            text=text,
            act=act,
            attributes=attrs,
            rec_item_ids=[rec[0]] if rec else [],
            rec_item_info=[f"{rec[0]}@{rec[1]}"] if rec else [],
            rec_candidates=[rec[2]] if rec else [],
            time=self.clock.strftime("%Y-%m-%d %H:%M:%S"),
        )
        self.turns.append(utt)
        return utt


def _fill(template: str, slots: dict[str, tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """Split ``template`` at ``{slot}`` markers into annotated parts."""
    parts: list[tuple[str, str | None]] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        if before:
            parts.append((before, None))
        parts.append(slots[name])
    if rest:
        parts.append((rest, None))
    return parts


def synthetic_corpus(
    config: SyntheticConfig | None = None, spec: dict[str, Any] | None = None
) -> UNeedCorpus:
    """Generate the synthetic corpus.

    Args:
        config: Sizes and seed (defaults: 300 dialogues, 200 items, 100 users).
        spec: A spec as returned by :func:`load_spec` (the packaged one by default).

    Returns:
        A :class:`~zjulab.crs.loaders.UNeedCorpus` with train/valid/test dialogues, items and
        behaviours; it can be written with :func:`~zjulab.crs.loaders.save_uneed_dir`.
    """
    cfg = config or SyntheticConfig()
    sp = spec or load_spec()
    rng = random.Random(cfg.seed)
    cats = list(sp["categories"])
    items: dict[str, Item] = {}
    by_cat: dict[str, list[Item]] = {c: [] for c in cats}
    weight: dict[str, float] = {}
    for c in cats:
        cs = sp["categories"][c]
        for i in range(cfg.items_per_category):
            iid = f"{cs['category_id']}{i:04d}"
            know = [("category", c), ("product", rng.choice(cs["products"]))]
            know += [(a, rng.choice(vals)) for a, vals in cs["attributes"].items()]
            know.append(("brand", f"brand {chr(65 + rng.randrange(8))}"))
            item = Item(item_id=iid, knowledge=know, seller_id=f"s{cs['category_id']}")
            items[iid] = item
            by_cat[c].append(item)
            weight[iid] = rng.paretovariate(1.5)

    def popular(c: str) -> Item:
        pool = by_cat[c]
        return rng.choices(pool, weights=[weight[x.item_id] for x in pool])[0]

    def overlap(a: Item, b: Item) -> int:
        return len(set(a.knowledge[1:-1]) & set(b.knowledge[1:-1]))

    users = [(f"u{j:04d}", cats[j % len(cats)]) for j in range(cfg.users)]
    persona: dict[str, Item] = {}
    behaviours: list[Behaviour] = []
    for uid, c in users:
        persona[uid] = popular(c)
        similar = [x for x in by_cat[c] if overlap(x, persona[uid]) >= 3] or [persona[uid]]
        t = _BASE_DAY - timedelta(days=30)
        for _ in range(cfg.behaviours_per_user):
            t += timedelta(hours=rng.randint(1, 48), minutes=rng.randint(0, 59))
            it = rng.choice(similar) if rng.random() < 0.6 else popular(c)
            behaviours.append(
                Behaviour(
                    it.seller_id, uid, it.item_id, t.strftime("%Y-%m-%d %H:%M:%S"), rng.choice([0, 0, 1, 2])
                )
            )

    from zjulab.crs.samples import LINK_ONLY, near_duplicate_key

    dialogues: dict[str, list[Dialogue]] = {"train": [], "valid": [], "test": []}
    specs = {False: _split_spec(sp, False), True: _split_spec(sp, True)}
    n = cfg.dialogues_per_category
    n_train = round(n * cfg.split[0])
    n_valid = round(n * cfg.split[1])
    plan = ["train"] * n_train + ["valid"] * n_valid + ["test"] * (n - n_train - n_valid)
    seen: set[str] = set()
    counter = 0
    for split in ("train", "valid", "test"):
        held = split != "train"
        for c in cats:
            cs = specs[held]["categories"][c]
            cat_users = [u for u, uc in users if uc == c] or [users[0][0]]
            for _ in range(plan.count(split)):
                counter += 1
                uid = rng.choice(cat_users)
                target = persona[uid] if rng.random() < 0.5 else popular(c)
                for _attempt in range(20 if held else 1):
                    d = _dialogue(specs[held], cs, c, cfg, rng, counter, uid, target, by_cat, cats)
                    keys = {near_duplicate_key(u.text) for u in d.utterances if u.text not in LINK_ONLY}
                    if not held or not (keys & seen):
                        break
                if not held:
                    seen |= keys
                dialogues[split].append(d)
    logger.info(
        "synthetic corpus: %s dialogues, %d items", {k: len(v) for k, v in dialogues.items()}, len(items)
    )
    return UNeedCorpus(dialogues=dialogues, items=items, behaviours=behaviours, name="synthetic")


def _partition(templates: list[Any], held_out: bool) -> list[Any]:
    """The templates a split may use.

    Every third one (the second of a pair) is held out; lists of one are shared.
    """
    if len(templates) < 2:
        return list(templates)
    held = {i for i in range(len(templates)) if i % 3 == 2} or {len(templates) - 1}
    return [t for i, t in enumerate(templates) if (i in held) == held_out]


def _split_spec(sp: dict[str, Any], held_out: bool) -> dict[str, Any]:
    out = dict(sp)
    for key in ("need_templates", "explain_templates", "generic_responses", "feedback_templates"):
        out[key] = _partition(sp[key], held_out)
    cats = {}
    for name, cs in sp["categories"].items():
        c = dict(cs)
        c["ask_templates"] = {a: _partition(t, held_out) for a, t in cs["ask_templates"].items()}
        c["answer_templates"] = {a: _partition(t, held_out) for a, t in cs["answer_templates"].items()}
        cats[name] = c
    out["categories"] = cats
    return out


def _dialogue(
    sp: dict[str, Any],
    cs: dict[str, Any],
    c: str,
    cfg: SyntheticConfig,
    rng: random.Random,
    counter: int,
    uid: str,
    target: Item,
    by_cat: dict[str, list[Item]],
    cats: list[str],
) -> Dialogue:
    start = _BASE_DAY + timedelta(days=counter % 300, minutes=rng.randint(0, 600))
    b = _Builder(start)
    tv = dict(target.knowledge)
    product = tv["product"]
    attrs = list(cs["attributes"])
    known: dict[str, str] = {}
    template = rng.choice(sp["need_templates"])
    slots: dict[str, tuple[str, str | None]] = {"p": (product, "product")}
    if "{v}" in template:
        a0 = rng.choice(attrs)
        slots["v"] = (tv[a0], a0)
        known[a0] = tv[a0]
    b.add("user", "user_need", _fill(template, slots))
    # the question order depends on the product type, so the next attribute is predictable
    # from the dialogue but not from the category alone
    base = cs["ask_order"]
    shift = cs["products"].index(product) % len(base)
    order = [a for a in base[shift:] + base[:shift] if a not in known]
    if len(order) > 1 and rng.random() < 0.2:
        order[0], order[1] = order[1], order[0]
    for a in order[: rng.randint(1, min(3, len(order)))]:
        templates = cs["ask_templates"][a]
        tpl = rng.choice(templates)
        if "{a}" in tpl:
            other = rng.choice([v for v in cs["attributes"][a] if v != tv[a]])
            x, y = (tv[a], other) if rng.random() < 0.5 else (other, tv[a])
            b.add("assistant", "system_ask", _fill(tpl, {"a": (x, a), "b": (y, a)}))
        else:
            b.add("assistant", "system_ask", [(tpl, None)], no_span=[a])
        ans = rng.choice(cs["answer_templates"][a])
        b.add("user", "user_answer", _fill(ans, {"v": (tv[a], a)}))
        known[a] = tv[a]

    def recommend_and_explain(item: Item, needs: dict[str, str]) -> None:
        pool = [x.item_id for x in by_cat[c] if x.item_id != item.item_id]
        cands = [*rng.sample(pool, cfg.candidates - 1), item.item_id]
        rng.shuffle(cands)
        b.add(
            "assistant",
            "system_recommend",
            [(sp["recommend_text"], None)],
            rec=(item.item_id, cs["category_id"], cands),
        )
        iv = dict(item.knowledge)
        keys = [k for k in needs if k in iv] or attrs[:2]
        k1 = rng.choice(keys)
        k2 = rng.choice([k for k in attrs if k != k1])
        roll = rng.random()
        if roll < cfg.degrade_rate * 0.35:
            text, base = rng.choice(sp["generic_responses"]), 3.0
        elif roll < cfg.degrade_rate * 0.7:
            w1 = rng.choice([v for v in cs["attributes"][k1] if v != iv[k1]])
            w2 = rng.choice([v for v in cs["attributes"][k2] if v != iv[k2]])
            text, base = rng.choice(sp["explain_templates"]).format(p=iv["product"], v1=w1, v2=w2), 2.0
        elif roll < cfg.degrade_rate:
            oc = sp["categories"][rng.choice([x for x in cats if x != c] or [c])]
            oa = list(oc["attributes"])
            text = rng.choice(sp["explain_templates"]).format(
                p=rng.choice(oc["products"]),
                v1=rng.choice(oc["attributes"][oa[0]]),
                v2=rng.choice(oc["attributes"][oa[-1]]),
            )
            base = 1.2
        else:
            text = rng.choice(sp["explain_templates"]).format(p=iv["product"], v1=iv[k1], v2=iv[k2])
            base = 4.5
        utt = b.add("assistant", "system_explain", [(text, None)])
        score = min(5.0, max(1.0, base + rng.gauss(0.0, 0.4)))
        quality[utt.seq_no] = round(score, 2)
        # the gold explanation (RUBER's reference), drawn from its own stream so the corpus
        # itself is the same as without references
        gold = random.Random(f"{cfg.seed}/{counter}/{utt.seq_no}")
        references[utt.seq_no] = gold.choice(sp["explain_templates"]).format(
            p=iv["product"], v1=iv[k1], v2=iv[k2]
        )

    quality: dict[int, float] = {}
    references: dict[int, str] = {}
    recommend_and_explain(target, known)
    if rng.random() < cfg.feedback_rate:
        a = rng.choice(attrs)
        v = rng.choice([x for x in cs["attributes"][a] if x != tv[a]])
        fb = rng.choice(sp["feedback_templates"])
        b.add("user", "user_feedback", _fill(fb, {"v": (v, a)}))
        known[a] = v
        best = max(
            by_cat[c],
            key=lambda x: (sum(dict(x.knowledge).get(k) == val for k, val in known.items()), x.item_id),
        )
        recommend_and_explain(best, known)
    return Dialogue(
        sid=f"syn{counter:05d}",
        domain=c,
        utterances=b.turns,
        seller_id=f"s{cs['category_id']}",
        user_id=uid,
        ds=start.strftime("%Y%m%d"),
        quality=quality,
        references=references,
    )
