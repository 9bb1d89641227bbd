from __future__ import annotations

import pytest

from zjulab.hiesql import Evaluator, evaluate_files, hardness, load_tables, parse_spider_sql, read_turn_file
from zjulab.hiesql.errors import SQLParseError, UnknownDatabaseError
from zjulab.hiesql.schema import SchemaSet

from .conftest import load_benchmark_module


@pytest.fixture
def ev(concert_schema):
    return Evaluator({"concert": concert_schema})


def score(ev, pred, gold):
    exact, comps, level, parsed = ev.match(pred, gold, "concert")
    return exact, {k: v.correct for k, v in comps.items()}, level, parsed


GOLD_JOIN = (
    "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2014"
)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        # reordered conditions
        (
            "SELECT name FROM singer WHERE age > 20 AND country = 'x'",
            "SELECT name FROM singer WHERE country = 'France' AND age > 30",
        ),
        # reordered select items
        ("SELECT age, name FROM singer", "SELECT name, age FROM singer"),
        # aliases resolved (and values ignored)
        (
            "SELECT singer.name FROM singer JOIN concert ON singer.singer_id = concert.singer_id WHERE concert.year = 1",
            GOLD_JOIN,
        ),
        # table order in the join does not matter
        (
            "SELECT A.name FROM concert AS B JOIN singer AS A ON A.singer_id = B.singer_id WHERE B.year = 2014",
            GOLD_JOIN,
        ),
        # DISTINCT ignored
        ("SELECT DISTINCT country FROM singer", "SELECT country FROM singer"),
        # the word "value" stands for a value
        ("SELECT name FROM singer WHERE age > value", "SELECT name FROM singer WHERE age > 30"),
        # foreign-key columns are folded onto one another
        (
            "SELECT count(*) FROM concert GROUP BY concert.singer_id",
            "SELECT count(*) FROM concert GROUP BY singer_id",
        ),
    ],
)
def test_equivalent_predictions_match(ev, pred, gold):
    exact, comps, _, parsed = score(ev, pred, gold)
    assert parsed and exact == 1 and all(v == 1 for v in comps.values())


def test_component_failures_are_located(ev):
    gold = "SELECT name, age FROM singer WHERE country = 'France' ORDER BY age DESC LIMIT 1"
    exact, comps, level, _ = score(
        ev, "SELECT name, max(age) FROM singer WHERE country = 'France' ORDER BY age DESC LIMIT 1", gold
    )
    assert exact == 0 and comps["select"] == 0 and comps["select(no AGG)"] == 1 and comps["where"] == 1
    exact, comps, _, _ = score(
        ev, "SELECT name, age FROM singer WHERE country = 'France' ORDER BY age ASC LIMIT 1", gold
    )
    assert exact == 0 and comps["order"] == 0 and comps["keywords"] == 0 and comps["select"] == 1
    exact, comps, _, _ = score(
        ev, "SELECT name, age FROM singer WHERE country = 'France' ORDER BY age DESC", gold
    )
    assert exact == 0 and comps["order"] == 0  # LIMIT presence is part of ORDER
    exact, comps, _, _ = score(
        ev, "SELECT name, age FROM singer WHERE country != 'France' ORDER BY age DESC LIMIT 1", gold
    )
    assert exact == 0 and comps["where"] == 0 and comps["where(no OP)"] == 1
    assert level == "hard"  # WHERE + ORDER + LIMIT = 3 clauses


def test_group_having_and_or(ev):
    gold = "SELECT country FROM singer GROUP BY country HAVING count(*) > 1"
    exact, comps, _, _ = score(ev, "SELECT country FROM singer GROUP BY country HAVING count(*) < 5", gold)
    assert exact == 0 and comps["group(no Having)"] == 1 and comps["group"] == 0
    exact, comps, _, _ = score(
        ev,
        "SELECT name FROM singer WHERE age > 1 OR country = 'x'",
        "SELECT name FROM singer WHERE age > 1 AND country = 'x'",
    )
    assert exact == 0 and comps["and/or"] == 0 and comps["where"] == 1


def test_nested_and_iuen(ev):
    gold = "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert WHERE year = 2014)"
    assert (
        score(
            ev,
            "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert WHERE year = 1999)",
            gold,
        )[0]
        == 1
    )
    exact, comps, level, _ = score(
        ev,
        "SELECT name FROM singer WHERE singer_id IN (SELECT concert_id FROM concert WHERE year = 2014)",
        gold,
    )
    assert exact == 0 and comps["where"] == 0 and comps["where(no OP)"] == 1 and level == "hard"
    iu = "SELECT name FROM singer WHERE age > 30 INTERSECT SELECT name FROM singer WHERE country = 'France'"
    assert score(ev, iu.replace("age > 30", "age > 1"), iu)[0] == 1
    exact, comps, _, _ = score(ev, iu.replace("INTERSECT", "UNION"), iu)
    assert exact == 0 and comps["IUEN"] == 0 and comps["keywords"] == 0
    exact, comps, _, _ = score(ev, iu.replace("country", "name"), iu)
    assert exact == 0 and comps["IUEN"] == 0 and comps["select"] == 1


def test_unparsable_prediction_scored_wrong_not_raised(ev):
    exact, comps, _, parsed = score(ev, "SELECT FROM WHERE )))", "SELECT name FROM singer")
    assert exact == 0 and not parsed and comps["select"] == 0


def test_unknown_db_and_bad_gold(ev):
    with pytest.raises(UnknownDatabaseError, match="unknown db_id 'nope'"):
        ev.match("SELECT 1", "SELECT name FROM singer", "nope")
    with pytest.raises(SQLParseError, match="cannot parse"):
        ev.match("SELECT name FROM singer", "SELECT nothing FROM singer", "concert")
    with pytest.raises(UnknownDatabaseError):
        SchemaSet()["x"]


@pytest.mark.parametrize(
    ("sql", "level"),
    [
        ("SELECT name FROM singer", "easy"),
        ("SELECT name FROM singer WHERE age > 3", "easy"),
        ("SELECT name, age FROM singer WHERE age > 3", "medium"),
        ("SELECT name FROM singer WHERE age > 3 ORDER BY age LIMIT 1", "hard"),
        ("SELECT name FROM singer WHERE age > 3 OR country = 'a' ORDER BY age LIMIT 1", "extra"),
        ("SELECT name FROM singer EXCEPT SELECT name FROM singer WHERE age > 3", "hard"),
        (
            "SELECT name, max(age), min(age) FROM singer WHERE age > 3 GROUP BY name ORDER BY age LIMIT 2",
            "extra",
        ),
    ],
)
def test_hardness(concert_schema, sql, level):
    assert hardness(parse_spider_sql(sql, concert_schema)) == level


def test_qm_im_and_turn_aggregation(ev):
    g = "SELECT name FROM singer"
    gold = [
        [(g, "concert"), ("SELECT name FROM singer WHERE age > 3", "concert")],
        [(g, "concert")],
        [(g, "concert")] * 3,
    ]
    pred = [[g, "SELECT name FROM singer"], [g], [g, g, "bad"]]
    rep = ev.evaluate(gold, pred)
    assert rep.question_match == pytest.approx(4 / 6)
    assert rep.interaction_match == pytest.approx(1 / 3)
    turns = rep.by_turn()
    assert turns["1"] == {"count": 3.0, "exact": 1.0}
    assert turns["2"]["exact"] == pytest.approx(0.5) and turns["3"]["exact"] == 0.0
    assert rep.parse_failures == 1
    assert rep.by_level()["easy"]["count"] == 6.0
    assert "QM = 0.6667  IM = 0.3333" in rep.format_table()


def test_execution_accuracy(concert_schema, concert_db):
    ev = Evaluator({"concert": concert_schema}, databases={"concert": concert_db})
    gold = [
        [
            ("SELECT name FROM singer WHERE country = 'France'", "concert"),
            ("SELECT count(*) FROM singer", "concert"),
        ]
    ]
    rep = ev.evaluate(
        gold, [["SELECT name FROM singer WHERE age < 35", "SELECT count(*) FROM singer WHERE age > 99"]]
    )
    assert [t.execution for t in rep.turns] == [1, 0]
    assert rep.execution_accuracy == 0.5 and rep.interaction_exec == 0
    assert [t.exact for t in rep.turns] == [0, 0]


def _ensure_trailing_blank(text: str) -> str:
    return text.rstrip("\n") + "\n\n"


@pytest.mark.parametrize(
    ("name", "qm", "im", "n_turns", "n_inter"),
    [("sparc", 790, 132, 1203, 422), ("cosql", 665, 75, 1007, 293)],
)
def test_pinned_against_official_script(shared_data, tmp_path, name, qm, im, n_turns, n_inter):
    """Numbers given by the official SParC evaluation script on the same files (seed-1 perturbation)."""
    perturb = load_benchmark_module("perturb")
    gold_text = _ensure_trailing_blank((shared_data / name / "dev_gold.txt").read_text())
    gold = tmp_path / "gold.txt"
    gold.write_text(gold_text)
    same = evaluate_files(gold, gold, shared_data / name / "tables.json")
    assert (same.question_match, same.interaction_match, len(same.turns), same.n_interactions) == (
        1.0,
        1.0,
        n_turns,
        n_inter,
    )
    pred = tmp_path / "pred.txt"
    pred.write_text(perturb.perturb_text(gold_text, 1))
    rep = evaluate_files(gold, pred, shared_data / name / "tables.json")
    assert sum(t.exact for t in rep.turns) == qm
    assert rep.interaction_exact == im
    if name == "sparc":
        levels = rep.by_level()
        assert [int(levels[k]["count"]) for k in ("easy", "medium", "hard", "extra")] == [483, 441, 145, 134]
        assert [
            round(levels[k]["exact"] * levels[k]["count"]) for k in ("easy", "medium", "hard", "extra")
        ] == [321, 299, 76, 94]
        assert [round(v["exact"] * v["count"]) for v in rep.by_turn().values()] == [292, 263, 177, 58, 0]
        part = rep.partial("all")
        assert part["select"]["acc"] == pytest.approx(0.974419, abs=1e-6)
        assert part["select"]["rec"] == pytest.approx(0.696592, abs=1e-6)
        assert part["order"]["f1"] == pytest.approx(0.705882, abs=1e-6)
        assert part["and/or"]["rec"] == pytest.approx(0.996619, abs=1e-6)
        assert part["IUEN"]["acc"] == pytest.approx(0.96875, abs=1e-6)
        assert rep.parse_failures == 320


def test_turn_file_round_trip_and_errors(tmp_path):
    from zjulab.hiesql import write_turn_file
    from zjulab.hiesql.errors import SchemaFileError

    p = tmp_path / "x.txt"
    write_turn_file(p, [[("SELECT a\tFROM b", "db1"), ("SELECT 1", "db1")], [("SELECT 2", "db2")]])
    assert read_turn_file(p) == [[("SELECT a FROM b", "db1"), ("SELECT 1", "db1")], [("SELECT 2", "db2")]]
    p.write_text("SELECT 1\tdb\n\n\n\nSELECT 2\tdb")  # extra blank lines, no trailing blank
    assert read_turn_file(p) == [[("SELECT 1", "db")], [("SELECT 2", "db")]]
    with pytest.raises(SchemaFileError, match="not found"):
        read_turn_file(tmp_path / "missing.txt")
    with pytest.raises(SchemaFileError, match="not found"):
        load_tables(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    with pytest.raises(SchemaFileError, match=r"bad\.json:1"):
        load_tables(bad)


def test_foreign_key_groups_follow_official_rule(concert_schema):
    assert concert_schema.foreign_key_map() == {
        "__concert.singer_id__": "__singer.singer_id__",
        "__singer.singer_id__": "__singer.singer_id__",
    }


def test_cli_eval(tmp_path, concert_schema, capsys):
    import json

    from zjulab.hiesql.cli import main

    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps([concert_schema.to_json()]))
    gold = tmp_path / "gold.txt"
    gold.write_text("SELECT name FROM singer\tconcert\nSELECT age FROM singer\tconcert\n\n")
    pred = tmp_path / "pred.txt"
    pred.write_text("SELECT name FROM singer\tconcert\nSELECT name FROM singer\tconcert\n\n")
    assert (
        main(["eval", str(gold), str(pred), "--tables", str(tables), "--json", str(tmp_path / "s.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "QM = 0.5000  IM = 0.0000" in out
    assert json.loads((tmp_path / "s.json").read_text())["question_match"] == 0.5
    assert main(["eval", str(gold), str(tmp_path / "none.txt"), "--tables", str(tables)]) == 2


@pytest.mark.parametrize(("name", "n_inter", "n_turns"), [("sparc", 422, 1203), ("cosql", 293, 1007)])
def test_loaders_on_shared_data(shared_data, name, n_inter, n_turns):
    from zjulab.hiesql import load_interactions

    inters = load_interactions(shared_data / name / "dev.json")
    gold = read_turn_file(shared_data / name / "dev_gold.txt")
    schemas = load_tables(shared_data / name / "tables.json")
    assert len(inters) == n_inter and sum(len(i) for i in inters) == n_turns and len(schemas) == 166
    shape = [(i.db_id, len(i)) for i in inters]
    gold_shape = [(g[0][1], len(g)) for g in gold]
    if name == "sparc":
        assert shape == gold_shape
    else:  # CoSQL's dev.json lists the dialogues in another order than dev_gold.txt
        assert shape != gold_shape and sorted(shape) == sorted(gold_shape)
    assert all(i.db_id in schemas for i in inters)


# --------------------------------------------------------------------------------------------
# scores that never hide missing, misaligned or uncomparable predictions
# --------------------------------------------------------------------------------------------
def _files(tmp_path, concert_schema, gold_lines, pred_lines):
    import json

    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps([concert_schema.to_json()]))
    gold, pred = tmp_path / "gold.txt", tmp_path / "pred.txt"
    gold.write_text(gold_lines)
    pred.write_text(pred_lines)
    return gold, pred, tables


def test_missing_turns_and_interactions_count_as_wrong(tmp_path, concert_schema, capsys):
    from zjulab.hiesql.cli import main

    g = "SELECT name FROM singer\tconcert\n"
    gold, pred, tables = _files(tmp_path, concert_schema, (g + g + "\n") * 3, g + "\n" + g + g + "\n")
    rep = evaluate_files(gold, pred, tables)
    assert len(rep.turns) == 6 and rep.n_interactions == 3
    assert rep.question_match == pytest.approx(3 / 6) and rep.interaction_match == pytest.approx(1 / 3)
    assert (rep.missing_turns, rep.missing_interactions, rep.complete) == (3, 1, False)
    assert rep.parse_failures == 0
    assert main(["eval", str(gold), str(pred), "--tables", str(tables)]) == 1
    out = capsys.readouterr().out
    assert "QM = 0.5000  IM = 0.3333" in out and "MISSING: 3 gold turns (1 whole interactions)" in out
    assert main(["eval", str(gold), str(pred), "--tables", str(tables), "--allow-missing"]) == 0


def test_extra_predictions_are_reported(tmp_path, concert_schema):
    g = "SELECT name FROM singer\tconcert\n"
    gold, pred, tables = _files(tmp_path, concert_schema, g + "\n", g + g + "\n" + g + "\n")
    rep = evaluate_files(gold, pred, tables)
    assert (rep.extra_turns, rep.extra_interactions, rep.complete, rep.question_match) == (1, 1, False, 1.0)


def test_misaligned_prediction_file_is_refused(tmp_path, concert_schema):
    from zjulab.hiesql.errors import SchemaFileError

    gold, pred, tables = _files(
        tmp_path,
        concert_schema,
        "SELECT name FROM singer\tconcert\n\nSELECT age FROM singer\tconcert\n",
        "SELECT name FROM singer\tconcert\n\nSELECT age FROM singer\tother_db\n",
    )
    with pytest.raises(
        SchemaFileError, match=r"pred\.txt:3: prediction for database 'other_db' but .*gold\.txt:3"
    ):
        evaluate_files(gold, pred, tables)


def test_execution_compares_full_results(tmp_path, concert_schema):
    import sqlite3

    db = tmp_path / "big.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER)")
    conn.executemany("INSERT INTO singer VALUES (?, 'n', 'c', 1)", [(k,) for k in range(1, 1501)])
    conn.execute(
        "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER, year INTEGER, stadium TEXT)"
    )
    conn.commit()
    conn.close()
    ev = Evaluator({"concert": concert_schema}, databases={"concert": db})
    rep = ev.evaluate(
        [[("SELECT singer_id FROM singer", "concert")]],
        [["SELECT singer_id FROM singer WHERE singer_id < 1200"]],
    )
    assert rep.turns[0].execution == 0  # equal when both were cut to 1,000 rows


def test_failing_gold_query_is_a_turn_error_not_a_crash(concert_schema, concert_db):
    from zjulab.hiesql.config import SandboxConfig

    slow = "SELECT count(*) FROM singer AS T1 " + " ".join(
        f"JOIN singer AS T{k}" for k in range(2, 17)
    )  # 3**16 rows
    ev = Evaluator(
        {"concert": concert_schema},
        databases={"concert": concert_db},
        sandbox_config=SandboxConfig(timeout_s=0.05, progress_steps=1),
    )
    gold = [[("SELECT name FROM singer", "concert"), ("SELECT name FROM nope", "concert"), (slow, "concert")]]
    rep = ev.evaluate(gold, [["SELECT name FROM singer", "SELECT name FROM singer", slow]])
    assert [t.execution for t in rep.turns] == [1, 0, 0]
    assert rep.turns[0].exec_error == "" and "unknown table 'nope'" in rep.turns[1].gold_error
    assert "gold query failed" in rep.turns[2].exec_error and "time limit" in rep.turns[2].exec_error
    assert rep.execution_errors == 2 and rep.execution_accuracy == pytest.approx(1 / 3)
    assert rep.question_match == pytest.approx(2 / 3) and rep.gold_errors == 1


def test_value_placeholder_official_and_token(concert_schema):
    official = Evaluator({"concert": concert_schema})
    token = Evaluator({"concert": concert_schema}, value_placeholder="token")
    gold = "SELECT name FROM singer WHERE country = 'Good value'"
    pred = "SELECT name FROM singer WHERE country = 'Good value'"
    assert official.match(pred, gold, "concert")[0] == 1
    from zjulab.hiesql.evaluation import _replace_value_token

    assert _replace_value_token("SELECT a FROM t WHERE b = value AND c = 'a value' AND value_id = VALUE") == (
        "SELECT a FROM t WHERE b = 1 AND c = 'a value' AND value_id = 1"
    )
    assert official._placeholder("SELECT value_id FROM t") == "SELECT 1_id FROM t"  # the official quirk
    assert token._placeholder("SELECT value_id FROM t") == "SELECT value_id FROM t"


def test_misaligned_pairs_refused_in_the_api(ev):
    from zjulab.hiesql.errors import SchemaFileError

    gold = [[("SELECT name FROM singer", "concert")]]
    assert ev.evaluate(gold, [[("SELECT name FROM singer", "concert")]]).question_match == 1.0
    with pytest.raises(SchemaFileError, match="interaction 0 turn 0 is for database 'other'"):
        ev.evaluate(gold, [[("SELECT name FROM singer", "other")]])
