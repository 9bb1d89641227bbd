"""Check built wheels (and, with ``--release``, everything a publishable distribution needs).

    python tools/check_wheels.py dist/                 # layout of every wheel in dist/
    python tools/check_wheels.py --release dist/NAME/  # the release check of one package

Layout (always): the wheel holds ``zjulab/NAME/__init__.py`` and ``zjulab/NAME/py.typed`` and no
``zjulab/__init__.py`` (which would break the shared namespace).

Release (``--release``): also the console scripts declared in the package's pyproject.toml are
the wheel's entry points, the licence file is inside the wheel and the metadata names the
licence, the long description is the package README (markdown), and an sdist sits beside the
wheel with the same version and ships the package's ``CHANGELOG.md`` (Keep a Changelog: a
``## [Unreleased]`` section or one for this version).
"""

from __future__ import annotations

import email.parser
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _metadata(names: list[str], zf: zipfile.ZipFile) -> tuple[str, email.message.Message]:
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    return info.rsplit("/", 1)[0], email.parser.Parser().parsestr(zf.read(info).decode("utf-8"))


def check_layout(whl: Path) -> list[str]:
    """Problems with a wheel's package layout."""
    names = zipfile.ZipFile(whl).namelist()
    pkg = whl.name.split("-")[0].removeprefix("zjulab_")
    problems = []
    if "zjulab/__init__.py" in names:
        problems.append("contains zjulab/__init__.py (breaks the namespace)")
    if f"zjulab/{pkg}/__init__.py" not in names:
        problems.append(f"missing zjulab/{pkg}/__init__.py")
    if f"zjulab/{pkg}/py.typed" not in names:
        problems.append(f"missing zjulab/{pkg}/py.typed")
    return problems


def check_release(whl: Path, project_dir: Path) -> list[str]:
    """Problems that would make ``whl`` a bad release of the package in ``project_dir``."""
    problems = check_layout(whl)
    zf = zipfile.ZipFile(whl)
    names = zf.namelist()
    distinfo, meta = _metadata(names, zf)
    project = tomllib.loads((project_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # entry points
    scripts = project.get("scripts", {})
    ep_name = f"{distinfo}/entry_points.txt"
    entry_points = zf.read(ep_name).decode() if ep_name in names else ""
    for script, target in scripts.items():
        if f"{script} = {target}" not in entry_points:
            problems.append(f"entry point {script} = {target} missing from the wheel")
    # licence
    if not any(n.startswith(f"{distinfo}/licenses/") for n in names):
        problems.append("no licence file in the wheel (dist-info/licenses/)")
    if not (meta.get("License-Expression") or meta.get("License")):
        problems.append("the metadata names no licence")
    # long description
    readme = (project_dir / "README.md").read_text(encoding="utf-8")
    if meta.get("Description-Content-Type", "").split(";")[0].strip() != "text/markdown":
        problems.append("long description is not declared as text/markdown")
    body = meta.get_payload()
    if not isinstance(body, str) or body.strip() != readme.strip():
        problems.append("long description is not the package README")
    # version and sdist
    version = meta["Version"]
    sdists = list(whl.parent.glob(f"{whl.name.split('-')[0]}-{version}.tar.gz"))
    if not sdists:
        problems.append(f"no sdist of version {version} beside the wheel")
    else:
        problems += check_changelog(sdists[0], version)
    return problems


def check_changelog(sdist: Path, version: str) -> list[str]:
    """Problems with the ``CHANGELOG.md`` an sdist ships (its users read it to upgrade)."""
    try:
        with tarfile.open(sdist) as tf:
            member = next(
                (m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/CHANGELOG.md")),
                None,
            )
            if member is None:
                return [f"{sdist.name} ships no CHANGELOG.md"]
            handle = tf.extractfile(member)
            text = handle.read().decode("utf-8") if handle else ""
    except (tarfile.TarError, OSError, UnicodeDecodeError) as exc:
        return [f"{sdist.name}: unreadable sdist or changelog ({exc})"]
    heads = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    if not text.startswith("# Changelog") or not heads:
        return [
            f"{sdist.name}: CHANGELOG.md is not in Keep a Changelog format (# Changelog, ## [X.Y.Z] sections)"
        ]
    if "Unreleased" not in heads and version not in heads:
        return [f"{sdist.name}: CHANGELOG.md has no section for {version} nor an [Unreleased] one"]
    return []


def main(argv: list[str]) -> int:
    args = argv[1:]
    release = "--release" in args
    args = [a for a in args if a != "--release"]
    if len(args) != 1:
        print(__doc__)
        return 2
    wheels = sorted(Path(args[0]).glob("*.whl"))
    if not wheels:
        print("no wheels found")
        return 1
    bad = 0
    for whl in wheels:
        project = ROOT / "packages" / whl.name.split("-")[0].replace("_", "-")
        problems = check_release(whl, project) if release else check_layout(whl)
        for p in problems:
            print(f"{whl.name}: {p}")
        if problems:
            bad += 1
        else:
            print(f"{whl.name}: ok{' (release)' if release else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
