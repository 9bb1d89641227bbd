"""Bump one package's version and changelog, and print the tag that releases it.

    python tools/bump_version.py zjulab-skillrouter patch     # or minor, major, or 1.2.3
    python tools/bump_version.py zjulab-skillrouter minor --dry-run
    python tools/bump_version.py zjulab-common release          # 0.2.0.dev0 -> 0.2.0

The version lives in one place, ``__version__`` in ``src/zjulab/NAME/__init__.py`` (hatch reads it
from there). The changelog's ``## [Unreleased]`` section becomes ``## [X.Y.Z] - YYYY-MM-DD`` and a
new empty ``[Unreleased]`` section is opened above it. Nothing is committed or tagged: the
command prints the git commands to run.

A version under development is ``X.Y.Z.devN`` (zjulab-common carries one while libraries depend
on its unreleased API, with floors such as ``zjulab-common>=0.2.0.dev0``). ``release`` (or
``X.Y.Z`` itself) turns it into ``X.Y.Z``; releasing zjulab-common that way also raises every
library's ``zjulab-common>=X.Y.Z.devN`` floor to ``>=X.Y.Z``, so no published library accepts a
development build.
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VERSION = re.compile(r'^__version__ = "(\d+\.\d+\.\d+(?:\.dev\d+)?)"$', re.M)


def next_version(current: str, how: str) -> str:
    base, dev, _n = current.partition(".dev")
    major, minor, patch = (int(x) for x in base.split("."))
    if dev:  # a version under development is released as itself (or as a later explicit one)
        if how == "release":
            return base
        if re.fullmatch(r"\d+\.\d+\.\d+", how) and tuple(int(x) for x in how.split(".")) >= (
            major,
            minor,
            patch,
        ):
            return how
        raise SystemExit(
            f"{current} is under development: bump it with 'release' (-> {base}) or X.Y.Z >= {base}"
        )
    if how == "release":
        raise SystemExit(f"{current} is not a development version; bump major, minor, patch or X.Y.Z")
    if how == "major":
        return f"{major + 1}.0.0"
    if how == "minor":
        return f"{major}.{minor + 1}.0"
    if how == "patch":
        return f"{major}.{minor}.{patch + 1}"
    if re.fullmatch(r"\d+\.\d+\.\d+", how):
        if tuple(int(x) for x in how.split(".")) <= (major, minor, patch):
            raise SystemExit(f"{how} is not newer than {current}")
        return how
    raise SystemExit(f"bump must be major, minor, patch or X.Y.Z, not {how!r}")


def bump(root: Path, package: str, how: str, *, today: str | None = None, dry_run: bool = False) -> str:
    """Rewrite ``package``'s version and changelog under ``root``; return the new version."""
    pkg_dir = root / "packages" / package
    init = pkg_dir / "src" / "zjulab" / package.removeprefix("zjulab-") / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"{package}: no {init.relative_to(root)}")
    text = init.read_text(encoding="utf-8")
    m = _VERSION.search(text)
    if m is None:
        raise SystemExit(f'{init}: no __version__ = "X.Y.Z" line')
    current = m.group(1)
    new = next_version(current, how)
    changelog = pkg_dir / "CHANGELOG.md"
    if not changelog.is_file():
        raise SystemExit(f"{package}: no CHANGELOG.md")
    log = changelog.read_text(encoding="utf-8")
    head = "## [Unreleased]"
    if head not in log:
        raise SystemExit(f"{changelog}: no '{head}' section to release")
    section = log.split(head, 1)[1].split("\n## [", 1)[0]
    if not section.strip():
        raise SystemExit(f"{changelog}: the [Unreleased] section is empty; say what changed first")
    date = today or datetime.date.today().isoformat()
    log = log.replace(head, f"{head}\n\n## [{new}] - {date}", 1)
    floors = _raised_floors(root, package, current, new) if ".dev" in current else {}
    if not dry_run:
        init.write_text(_VERSION.sub(f'__version__ = "{new}"', text, count=1), encoding="utf-8")
        changelog.write_text(log, encoding="utf-8")
        for path, body in floors.items():
            path.write_text(body, encoding="utf-8")
    for path in floors:
        print(f"  raised the {package} floor in {path.relative_to(root)}")
    return new


def _raised_floors(root: Path, package: str, dev: str, new: str) -> dict[Path, str]:
    """Every other package's pyproject.toml with ``package[...]>=dev`` raised to ``>=new``."""
    pattern = re.compile(rf'("{re.escape(package)}(?:\[[^\]]*\])?>=){re.escape(dev)}(?=[",;\s])')
    out = {}
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        if pyproject.parent.name == package:
            continue
        text = pyproject.read_text(encoding="utf-8")
        raised = pattern.sub(rf"\g<1>{new}", text)
        if raised != text:
            out[pyproject] = raised
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--dry-run"]
    if len(args) != 2:
        print(__doc__)
        return 2
    package, how = args
    new = bump(ROOT, package, how, dry_run="--dry-run" in argv)
    tag = f"{package}-v{new}"
    print(f"{package} -> {new}")
    print(f"  git commit -am '{package}: release {new}'")
    print(f"  git tag {tag} && git push origin main {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
