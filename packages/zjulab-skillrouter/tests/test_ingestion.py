"""A realistic skills folder: 32 SKILL.md files with overlapping names, a symlinked skill, dated
front matter, list/number values, a body-less registry entry and one broken file."""

from __future__ import annotations

import json
import os

import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import RouterConfig, SkillParseError, SkillRouter, load_skills
from zjulab.skillrouter.cli import main

GROUPS = {
    "pdf": [
        ("pdf-tools", "Extract text and tables from PDFs with pdfplumber."),
        ("pdf-toolkit", "Merge, split and rotate PDF pages with pypdf."),
        ("pdf-helper", "OCR scanned PDFs with ocrmypdf so they become searchable."),
        ("pdf-utils", "Fill and flatten PDF forms."),
    ],
    "spreadsheet": [
        ("xlsx-tools", "Read Excel workbooks with openpyxl and keep formulas."),
        ("xlsx-helper", "Build pivot tables with pandas and write them back to xlsx."),
        ("csv-tools", "Clean CSV files: encodings, delimiters, duplicate rows."),
        ("sheets-utils", "Chart spreadsheet columns with matplotlib."),
    ],
    "git": [
        ("git-tools", "Bisect a regression between two commits with git bisect run."),
        ("git-helper", "Rewrite history to remove a leaked secret with git filter-repo."),
        ("git-utils", "Resolve merge conflicts in lockfiles."),
        ("github-tools", "Open pull requests and read review comments with gh."),
    ],
    "docker": [
        ("docker-tools", "Write multi-stage Dockerfiles that keep images small."),
        ("docker-helper", "Debug a container that exits at start with docker logs and exec."),
        ("compose-tools", "Run a local stack with docker compose and health checks."),
        ("docker-utils", "Scan images for vulnerabilities with trivy."),
    ],
    "web": [
        ("scrape-tools", "Scrape static pages with requests and BeautifulSoup."),
        ("scrape-helper", "Scrape JavaScript pages with Playwright."),
        ("api-tools", "Call REST APIs with retries and pagination."),
        ("crawl-utils", "Respect robots.txt and rate limits when crawling."),
    ],
    "audio": [
        ("audio-tools", "Transcribe speech with whisper."),
        ("audio-helper", "Normalise loudness and trim silence with ffmpeg."),
        ("audio-utils", "Split podcasts into chapters."),
        ("music-tools", "Detect tempo and key with librosa."),
    ],
    "testing": [
        ("test-tools", "Write pytest fixtures and parametrised tests."),
        ("test-helper", "Measure coverage and find untested branches."),
        ("load-tools", "Load test an HTTP API with locust and report p99 latency."),
        ("fuzz-utils", "Fuzz parsers with hypothesis."),
    ],
}


@pytest.fixture()
def skills_folder(tmp_path):
    root = tmp_path / "registry"
    for group, items in GROUPS.items():
        for name, job in items:
            d = root / group / name
            d.mkdir(parents=True)
            body = f"# {name}\n\n{job}\n\n## Steps\n1. Check the input.\n2. {job}\n"
            (d / "SKILL.md").write_text(
                f"---\nname: {name}\ndescription: Work with {group} files.\n---\n{body}"
            )
    # dated front matter, lists and numbers
    (root / "pdf" / "pdf-tools" / "SKILL.md").write_text(
        "---\nname: pdf-tools\ndescription: Work with pdf files.\nupdated: 2025-03-01\n"
        "tags: [pdf, extract]\nversion: 2.1\nauthors:\n  - {name: a, since: 2024-01-02}\n---\n"
        "Extract text and tables from PDFs with pdfplumber.\n"
    )
    # a registry entry with no body
    (root / "misc" / "bare").mkdir(parents=True)
    (root / "misc" / "bare" / "SKILL.md").write_text(
        "---\nname: bare-entry\ndescription: Convert units.\n---\n"
    )
    # a numeric name
    (root / "misc" / "n2024").mkdir(parents=True)
    (root / "misc" / "n2024" / "SKILL.md").write_text(
        "---\nname: 2024\ndescription: Year tools.\n---\nCalendars.\n"
    )
    # one broken file
    (root / "broken" / "bad").mkdir(parents=True)
    (root / "broken" / "bad" / "SKILL.md").write_text("---\nname: bad\ndescription: [unclosed\n---\nbody\n")
    # a symlinked skill folder living outside the root
    outside = tmp_path / "vendor" / "geo-tools"
    outside.mkdir(parents=True)
    (outside / "SKILL.md").write_text(
        "---\nname: geo-tools\ndescription: Maps.\n---\nReproject shapefiles with pyproj.\n"
    )
    os.symlink(outside, root / "misc" / "geo-tools")
    return root


def test_strict_loading_names_the_broken_file(skills_folder):
    with pytest.raises(SkillParseError, match=r"broken/bad/SKILL\.md:3"):
        load_skills(skills_folder)


def test_skip_loads_the_rest_and_reports_file_line_reason(skills_folder):
    skills = load_skills(skills_folder, errors="skip")
    assert len(skills) == 28 + 3  # 28 group skills, bare, numeric name, the symlinked one
    assert [(os.path.relpath(s.path, skills_folder), s.line) for s in skills.skipped] == [
        ("broken/bad/SKILL.md", 3)
    ]
    assert "malformed front matter" in skills.skipped[0].reason
    by_id = {s.id: s for s in skills}
    assert by_id["misc/geo-tools"].body.startswith("Reproject shapefiles")
    assert by_id["misc/n2024"].name == "2024"
    meta = by_id["pdf/pdf-tools"].metadata
    assert meta["updated"] == "2025-03-01" and meta["tags"] == ["pdf", "extract"] and meta["version"] == 2.1
    assert meta["authors"] == [{"name": "a", "since": "2024-01-02"}]
    assert by_id["misc/bare"].body == ""


def test_the_whole_folder_indexes_saves_loads_and_routes(skills_folder, tmp_path):
    skills = load_skills(skills_folder, errors="skip")
    r = SkillRouter(HashingEncoder(256), None, RouterConfig(retriever="hybrid", rerank=False)).index(skills)
    path = r.save(tmp_path / "idx")
    json.loads((path / "router.json").read_text())  # dates and numbers serialised
    back = SkillRouter.load(path, encoder=HashingEncoder(256))
    assert back.route("make scanned PDFs searchable with OCR", k=1)[0].skill.id == "pdf/pdf-helper"
    assert back.route("convert units", k=1)[0].skill.id == "misc/bare"
    assert back.route("reproject shapefiles", k=1)[0].skill.id == "misc/geo-tools"
    assert back.route("p99 latency load test", k=1, where={"tags": "pdf"})[0].skill.id == "pdf/pdf-tools"


def test_cli_skip_bad_prints_the_report(skills_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(skills_folder), "--out", str(out), "--retriever", "bm25", "--no-rerank"]) != 0
    assert (
        main(
            [
                "index",
                str(skills_folder),
                "--out",
                str(out),
                "--retriever",
                "bm25",
                "--no-rerank",
                "--skip-bad",
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert "skipped " in cap.err and "broken/bad/SKILL.md:3: malformed front matter" in cap.err
    assert "indexed 31 skills" in cap.out


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def test_hostile_files_are_typed_errors_strict_and_reported_with_skip(tmp_path, capsys):
    """YAML alias bombs and cycles, dangling links, undecodable folder names: never a traceback."""
    root = tmp_path / "reg"
    _write(root / "ok" / "SKILL.md", "---\nname: ok\ndescription: fine\n---\nMerge PDFs.\n")
    lol = "---\nname: lol\ndescription: x\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for prev, cur in zip("abcdef", "bcdefg"):
        lol += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    _write(root / "bomb" / "SKILL.md", lol + "---\nbody\n")  # 9**7 values once expanded
    _write(root / "cycle" / "SKILL.md", "---\nname: cyc\ndescription: x\nloop: &l [*l]\n---\nbody\n")
    (root / "dangling").mkdir()
    os.symlink(tmp_path / "nowhere" / "SKILL.md", root / "dangling" / "SKILL.md")
    bad_dir = os.fsencode(root) + b"/caf\xe9"
    os.makedirs(bad_dir)
    with open(bad_dir + b"/SKILL.md", "wb") as fh:
        fh.write(b"---\nname: cafe\ndescription: latin-1 folder name\n---\nbody\n")
    expected = {
        "bomb": (2, "expands to too many values"),
        "cycle": (2, "refers to itself"),
        "dangling": (None, "cannot read: No such file or directory"),
        "caf\\xe9": (None, "path is not valid UTF-8"),
    }
    loaded = load_skills(root, errors="skip")
    assert [s.id for s in loaded] == ["ok"]
    got = {os.path.basename(os.path.dirname(s.path)): (s.line, s.reason) for s in loaded.skipped}
    assert set(got) == set(expected)
    for folder, (line, why) in expected.items():
        assert got[folder][0] == line and why in got[folder][1], (folder, got[folder])
    # strict: the first bad file (sorted by path) as a typed error, not RecursionError/OSError
    with pytest.raises(SkillParseError, match=r"bomb/SKILL\.md:2: .*too many values"):
        load_skills(root)
    out = tmp_path / "idx"
    assert main(["index", str(root), "--out", str(out), "--retriever", "bm25", "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "caf\\xe9/SKILL.md: the file's path is not valid UTF-8" in err and "Traceback" not in err
    assert len(SkillRouter.load(out)) == 1


def test_strings_that_cannot_be_utf8_are_refused_at_the_skill():
    from zjulab.skillrouter import InvalidSkillError, Skill

    with pytest.raises(InvalidSkillError, match="'id' holds characters that are not valid Unicode"):
        Skill(name="x", description="d", body="b", id="caf\udce9")


def _skill_md(folder, front: str, body: str = "Body.") -> None:
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"---\n{front}\n---\n{body}\n", encoding="utf-8")


def test_front_matter_source_path_is_reserved_not_overwritten(tmp_path):
    """The loader records each file's path under metadata['source_path']: a front matter that
    sets that key would lose its value, so it is refused with the file and the key's line."""
    from zjulab.skillrouter import load_skills_dir

    _skill_md(tmp_path / "a", "name: a\ndescription: first")
    _skill_md(tmp_path / "b", "name: b\ndescription: second\nsource_path: ../upstream/b.md")
    with pytest.raises(SkillParseError) as err:
        load_skills_dir(tmp_path)
    assert err.value.path == str(tmp_path / "b" / "SKILL.md") and err.value.line == 4
    assert "'source_path'" in str(err.value) and "reserved" in str(err.value)
    got = load_skills_dir(tmp_path, errors="skip")
    assert [s.id for s in got] == ["a"]
    assert got[0].metadata["source_path"] == str(tmp_path / "a" / "SKILL.md")
    assert [(s.line, "reserved" in s.reason) for s in got.skipped] == [(4, True)]


def test_where_on_id_and_name_reads_the_skill_fields(tmp_path):
    """``id`` and ``name`` are fields of the skill, never metadata: a filter on them matches the
    skill's own values instead of silently matching nothing."""
    from zjulab.skillrouter import Skill

    skills = [
        Skill(name=f"pdf-{i}", description="Merge PDF files.", body="pypdf merge", id=f"s{i}")
        for i in range(4)
    ]
    r = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False)).index(skills)
    assert [x.skill.id for x in r.route("merge pdf", k=4, where={"name": "pdf-2"})] == ["s2"]
    assert sorted(x.skill.id for x in r.route("merge pdf", k=4, where={"id": ["s1", "s3"]})) == ["s1", "s3"]
