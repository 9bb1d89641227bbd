import copy
import json
import re
from pathlib import Path

import pytest

from zjulab.common.errors import InputError
from zjulab.crs.dialogue import Attribute, format_pairs, parse_pairs
from zjulab.crs.errors import DataFormatError
from zjulab.crs.loaders import (
    dialogue_from_record,
    dialogue_to_record,
    load_behaviours,
    load_dialogues,
    load_items,
    load_task_samples,
    load_uneed_dir,
    save_behaviours,
    save_dialogues,
    save_items,
    save_task_samples,
    save_uneed_dir,
)
from zjulab.crs.synthetic import SyntheticConfig, load_spec, synthetic_corpus

# --- the public U-NEED samples ------------------------------------------------------------


def test_uneed_dialogue_files_round_trip(uneed_dir: Path, tmp_path: Path):
    for split in ("train", "valid", "test"):
        src = uneed_dir / f"{split}_dialogue.json"
        original = json.loads(src.read_text(encoding="utf-8"))
        dialogues = load_dialogues(src)
        assert [dialogue_to_record(d) for d in dialogues] == original
        save_dialogues(tmp_path / src.name, dialogues)
        assert json.loads((tmp_path / src.name).read_text(encoding="utf-8")) == original


def test_uneed_dialogue_content(uneed_dir: Path):
    d = load_dialogues(uneed_dir / "test_dialogue.json")[0]
    assert d.category == "beauty" and d.sid == "00095ae344e293ed78cb7d5a78bc63f4"
    first = d.utterances[0]
    assert first.role == "user" and first.act == "user_need"
    assert [(a.key, first.text[a.start : a.end]) for a in first.attributes] == [
        ("性别", "男"),
        ("品类", "洗面奶"),
        ("品类", "水乳"),
        ("品类", "套装"),
    ]
    ask = d.utterances[1]
    assert ask.act == "system_ask" and ask.attributes[0] == Attribute("年龄", "", -1, -1)
    rec = d.utterances[6]
    assert rec.rec_item_ids == ["577681663455"] and len(rec.rec_candidates[0]) == 20


def test_uneed_examples_md_all_five_categories_round_trip(shared_data: Path):
    text = (shared_data / "uneed/U-NEED/examples.md").read_text(encoding="utf-8")
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)]
    dialogues = [dialogue_from_record(b) for b in blocks]
    assert [d.category for d in dialogues] == ["beauty", "fashion", "phones", "shoes", "appliances"]
    assert [dialogue_to_record(d) for d in dialogues] == blocks  # no rec_item_candidates there
    assert all(u.rec_candidates is None for d in dialogues for u in d)


def test_uneed_kg_and_actions(uneed_dir: Path, tmp_path: Path):
    items = load_items(uneed_dir / "item_kg.txt")
    assert list(items) == ["10027318299"]
    assert items["10027318299"].knowledge == [("一级类目", "1801"), ("价格区间", "中"), ("使用人群", "妈妈")]
    save_items(tmp_path / "item_kg.txt", items.values())
    assert load_items(tmp_path / "item_kg.txt") == items
    acts = load_behaviours(uneed_dir / "user_action.txt")
    assert (acts[0].user_id, acts[0].item_id, acts[0].time, acts[0].action) == (
        "277374149",
        "545878107033",
        "2022-09-24 17:17:31",
        0,
    )
    save_behaviours(tmp_path / "user_action.txt", acts)
    assert load_behaviours(tmp_path / "user_action.txt") == acts


def test_uneed_task_samples_round_trip(uneed_dir: Path, tmp_path: Path):
    for rel in (
        "saved_data/json/test_sample.json",
        "saved_data/jsonl/test_sample.jsonl",
        "prompt4LLM/test_sample.json",
    ):
        src = uneed_dir / rel
        samples = load_task_samples(src)
        assert samples[1].label_pairs() == [("年龄", ""), ("肤质", "偏油"), ("肤质", "偏干")]
        out = tmp_path / Path(rel).name
        save_task_samples(out, samples)
        assert load_task_samples(out) == samples
        if src.suffix == ".json":
            assert json.loads(out.read_text(encoding="utf-8")) == json.loads(src.read_text(encoding="utf-8"))
    llm = load_task_samples(uneed_dir / "prompt4LLM/test_sample.json")
    assert llm[0].extra["output_llm"] == "性别：男；品类：洗面奶；品类：水乳；品类：套装"


def test_uneed_directory(uneed_dir: Path):
    corpus = load_uneed_dir(uneed_dir)
    assert {k: len(v) for k, v in corpus.dialogues.items()} == {"train": 1, "valid": 1, "test": 1}
    assert corpus.categories() == ["beauty"] and len(corpus.behaviours) == 2


# --- validation ---------------------------------------------------------------------------

GOOD = {
    "domain": "美妆行业",
    "sid": "s1",
    "sellerid": "1",
    "userid": "2",
    "ds": "20220101",
    "dialogue": [
        {
            "seq_no": 1,
            "time": "2022-01-01 10:00:00",
            "sender_type": "用户",
            "send_content": "推荐面膜",
            "act_tag": "用户需求",
            "attributes": [{"key": "品类", "value": "面膜", "start": 2, "exclusive_end": 4}],
            "rec_item_id": [],
            "rec_item_info": [],
        }
    ],
}


def write(tmp_path: Path, record: object, name: str = "train_dialogue.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["dialogue"][0].pop("send_content"), r"seq_no 1\).*missing field 'send_content'"),
        (lambda r: r["dialogue"][0].update(sender_type="店主"), "unknown sender_type '店主'"),
        (lambda r: r["dialogue"][0].update(act_tag="闲聊"), "unknown act_tag '闲聊'"),
        (lambda r: r["dialogue"][0].update(seq_no="1"), "field 'seq_no' must be int"),
        (
            lambda r: r["dialogue"][0]["attributes"][0].update(start=1),
            r"text\[1:4\] is '荐面膜', not the value '面膜'",
        ),
        (
            lambda r: r["dialogue"][0]["attributes"][0].update(exclusive_end=9),
            "outside the utterance of length 4",
        ),
        (lambda r: r.pop("dialogue"), "missing field 'dialogue'"),
        (lambda r: r.update(quality={"3": "good"}), "quality"),
    ],
)
def test_malformed_dialogue_names_file_record_and_field(tmp_path: Path, change, message):
    rec = copy.deepcopy(GOOD)
    change(rec)
    path = write(tmp_path, [copy.deepcopy(GOOD), rec])
    with pytest.raises(DataFormatError, match=message) as info:
        load_dialogues(path)
    assert str(path) in str(info.value) and "dialogue 1" in str(info.value)
    assert isinstance(info.value, InputError)


def test_lenient_mode_drops_bad_span_keeps_value(tmp_path: Path, caplog):
    rec = copy.deepcopy(GOOD)
    rec["dialogue"][0]["attributes"][0]["start"] = 1
    d = load_dialogues(write(tmp_path, [rec]), strict=False)[0]
    assert d.utterances[0].attributes == [Attribute("品类", "面膜", -1, -1)]
    assert "span dropped" in caplog.text


def test_invalid_json_and_wrong_top_level(tmp_path: Path):
    bad = tmp_path / "x_dialogue.json"
    bad.write_text('[{"domain": ', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"x_dialogue.json:1:\d+: invalid JSON"):
        load_dialogues(bad)
    with pytest.raises(DataFormatError, match="expected a JSON array"):
        load_dialogues(write(tmp_path, "text"))


def test_csv_errors_name_file_and_line(tmp_path: Path):
    kg = tmp_path / "item_kg.txt"
    kg.write_text(
        "item_id_encrypt,seller_id_encrypt,relation_name,value\n1,2,颜色,红\n1,2,颜色\n", encoding="utf-8"
    )
    with pytest.raises(DataFormatError, match=r"item_kg.txt:3: expected 4 fields, got 3"):
        load_items(kg)
    kg.write_text("item,seller,relation,value\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"item_kg.txt:1: header must be"):
        load_items(kg)
    acts = tmp_path / "user_action.txt"
    head = "seller_id_encrypt,user_id_encrypt,item_id_encrypt,actime,action_id\n"
    acts.write_text(head + "1,2,3,yesterday,0\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"user_action.txt:2: actime 'yesterday'"):
        load_behaviours(acts)
    acts.write_text(head + "1,2,3,2022-09-24 17:17:31,click\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"user_action.txt:2: action_id 'click'"):
        load_behaviours(acts)
    with pytest.raises(DataFormatError, match="no such file"):
        load_items(tmp_path / "missing.txt")


def test_task_sample_errors(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"input": ["a"], "domain": "d", "sid": "1", "task_name": "t", "label": "x"}\n{"input": "a"}\n'
    )
    with pytest.raises(DataFormatError, match=r"s.jsonl: line 2: field 'input' must be list"):
        load_task_samples(path)
    with pytest.raises(DataFormatError, match=r"no train/valid/test_dialogue\.json"):
        load_uneed_dir(tmp_path)


def test_label_pairs():
    assert parse_pairs("品类：洗面奶；年龄：") == [("品类", "洗面奶"), ("年龄", "")]
    assert parse_pairs("color: red; size") == [("color", "red"), ("size", "")]
    assert format_pairs([("品类", "洗面奶"), ("年龄", "")]) == "品类：洗面奶；年龄："


# --- synthetic corpus ----------------------------------------------------------------------


def test_synthetic_corpus_is_deterministic_and_round_trips(tmp_path: Path):
    cfg = SyntheticConfig(dialogues_per_category=4, items_per_category=20, users=10, candidates=10)
    a, b = synthetic_corpus(cfg), synthetic_corpus(cfg)
    recs = [dialogue_to_record(d) for ds in a.dialogues.values() for d in ds]
    assert recs == [dialogue_to_record(d) for ds in b.dialogues.values() for d in ds]
    save_uneed_dir(tmp_path, a)
    c = load_uneed_dir(tmp_path)  # strict validation passes: every span matches its value
    assert [dialogue_to_record(d) for ds in c.dialogues.values() for d in ds] == recs
    assert c.items == a.items and c.behaviours == a.behaviours
    assert a.categories() == ["appliances", "beauty", "fashion", "phones", "shoes"]
    # 4 dialogues per category split 70/15/15 within the category: round(2.8)=3, round(0.6)=1, 0
    assert {k: len(v) for k, v in a.dialogues.items()} == {"train": 15, "valid": 5, "test": 0}


def test_synthetic_structure(small_corpus):
    d = small_corpus.split("train")[0]
    assert d.utterances[0].act == "user_need" and d.utterances[0].role == "user"
    assert any(u.act == "system_ask" for u in d) and any(u.rec_item_ids for u in d)
    for u in d:
        if u.rec_item_ids:
            assert u.rec_item_ids[0] in u.rec_candidates[0] and len(u.rec_candidates[0]) == 10
    assert d.quality and all(1.0 <= s <= 5.0 for s in d.quality.values())
    item = small_corpus.items[
        d.utterances[-1].rec_item_ids[0] if d.utterances[-1].rec_item_ids else next(iter(small_corpus.items))
    ]
    assert item.values("category")


def test_synthetic_config_and_spec_errors(tmp_path: Path):
    from zjulab.crs.errors import CrsConfigError

    with pytest.raises(CrsConfigError, match="candidates=50 > items_per_category=40"):
        SyntheticConfig(candidates=50)
    with pytest.raises(CrsConfigError, match="split"):
        SyntheticConfig(split=(0.5, 0.5, 0.5))
    spec = load_spec()
    del spec["categories"]["beauty"]["ask_order"]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(DataFormatError, match="category 'beauty' lacks 'ask_order'"):
        load_spec(path)
