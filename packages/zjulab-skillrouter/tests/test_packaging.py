"""The sdist carries a changelog in Keep a Changelog form (users read it to upgrade)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_sdist_ships_the_changelog():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "CHANGELOG.md" in meta["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_changelog_is_keep_a_changelog():
    path = ROOT / "CHANGELOG.md"
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# Changelog"
    assert re.findall(r"^## .*$", text, flags=re.M)[:2] == ["## [Unreleased]", "## [0.1.0] - 2026-11-25"]
    kinds = re.findall(r"^### (.*)$", text, flags=re.M)
    assert kinds and set(kinds) <= SECTIONS
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert re.search(r"^- \S", unreleased, flags=re.M), "the [Unreleased] section lists no change"
