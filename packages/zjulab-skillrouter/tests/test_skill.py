from __future__ import annotations

import json

import pytest

from zjulab.common.errors import InputError, NotFoundError
from zjulab.skillrouter import (
    DuplicateSkillError,
    EmptyPoolError,
    InvalidSkillError,
    Skill,
    SkillParseError,
    format_query,
    format_skill,
    load_skills,
    load_skills_dir,
    load_skills_jsonl,
    parse_skill_md,
    skills_from_records,
    validate_pool,
)

GOOD = "---\nname: pdf-tools\ndescription: Work with PDFs.\nversion: 2\n---\n\n# pdf-tools\nMerge files.\n"


def test_parse_skill_md():
    s = parse_skill_md(GOOD, "x/SKILL.md")
    assert (s.name, s.description, s.body, s.id) == (
        "pdf-tools",
        "Work with PDFs.",
        "# pdf-tools\nMerge files.",
        "pdf-tools",
    )
    assert s.metadata == {"version": 2}


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("name: x\n", 1, "first line must be '---'"),
        ("---\nname: x\n", 1, "unterminated"),
        ("---\nname: x\ndescription: [unclosed\n---\nbody\n", 3, "malformed front matter"),
        ("---\nname: a\n  bad: indent\n---\nbody\n", 3, "malformed front matter"),
        ("---\ndescription: no name\n---\nbody\n", 2, "no 'name'"),
        ("---\n- a list\n---\nbody\n", 2, "must be a mapping"),
    ],
)
def test_malformed_front_matter_names_file_and_line(text, line, match):
    with pytest.raises(SkillParseError, match=match) as info:
        parse_skill_md(text, "skills/a/SKILL.md")
    assert info.value.line == line
    assert str(info.value).startswith(f"skills/a/SKILL.md:{line}:")
    assert isinstance(info.value, InputError)


def _write(root, rel, content):
    p = root / rel / "SKILL.md"
    p.parent.mkdir(parents=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def test_load_dir_ids_are_relative_paths_and_stable(tmp_path):
    _write(tmp_path, "docs/pdf", GOOD)
    _write(tmp_path, "media/img", GOOD.replace("pdf-tools", "img-tools"))
    a = load_skills_dir(tmp_path)
    assert [s.id for s in a] == ["docs/pdf", "media/img"]
    assert [s.id for s in load_skills(tmp_path)] == [s.id for s in a]


def test_non_utf8_skill_md(tmp_path):
    p = _write(tmp_path, "bad", b"---\nname: x\n---\ncaf\xe9 menu\n")
    with pytest.raises(SkillParseError, match="not valid UTF-8") as info:
        load_skills_dir(tmp_path)
    assert info.value.line == 4 and str(p) in str(info.value)


def test_empty_folder_and_missing_folder(tmp_path):
    with pytest.raises(EmptyPoolError, match=r"no SKILL\.md"):
        load_skills_dir(tmp_path)
    with pytest.raises(NotFoundError, match="not found"):
        load_skills_dir(tmp_path / "nope")


def test_jsonl_round_trip_and_bad_line(tmp_path, pool):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in pool))
    assert load_skills_jsonl(path) == pool
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(pool[0].to_dict()) + "\n{not json\n")
    with pytest.raises(SkillParseError, match="invalid JSON") as info:
        load_skills_jsonl(bad)
    assert info.value.line == 2


def test_records_and_validation(pool):
    recs = skills_from_records([{"id": "a", "name": "A", "desc": "d", "content": "b", "extra": 1}])
    assert recs[0] == Skill(name="A", description="d", body="b", id="a", metadata={"extra": 1})
    with pytest.raises(EmptyPoolError):
        validate_pool([])
    with pytest.raises(DuplicateSkillError, match="'pdf-merge' at positions 0 and 8"):
        validate_pool([*pool, pool[0]])
    # registry entries hold only a name and a description: accepted, routed on both
    bodyless = Skill(name="x", description="d", body="  ")
    assert validate_pool([bodyless]) == [bodyless]
    assert format_skill(bodyless) == "x | d"
    with pytest.raises(InvalidSkillError, match="empty name"):
        Skill(name=" ", description="d", body="b")
    with pytest.raises(InvalidSkillError, match="'body' must be a string"):
        skills_from_records([{"name": "x", "body": 3}])


def test_format_skill_exact_truncation():
    s = Skill(name="n", description="abcdef", body="0123456789")
    assert format_skill(s, desc_max=3, body_max=4) == "n | abc | 0123"
    assert format_skill(s, fields="name_description", desc_max=300) == "n | abcdef"
    assert format_skill(s) == "n | abcdef | 0123456789"
    long = Skill(name="x", description="d" * 400, body="b" * 3000)
    assert format_skill(long) == "x | " + "d" * 300 + " | " + "b" * 2500
    assert format_skill(long, desc_max=500, body_max=2000) == "x | " + "d" * 400 + " | " + "b" * 2000
    assert format_query("hello world", prompt="Q: ", max_chars=5) == "Q: hello"
