"""List the packages under packages/ that changed since a git ref, or that need a release.

A change to zjulab-common, to the shared build files (noxfile.py, constraints.txt,
pyproject.toml) or to tools/ marks every package as changed, since they all depend on it.

    python tools/changed_packages.py origin/main     # packages to test
    python tools/changed_packages.py --needs-bump    # packages to release

``--needs-bump`` prints each package whose own files (``packages/NAME/``, tests and docs
excluded) changed since its last release tag ``NAME-vX.Y.Z``, or that was never tagged, with the
reason; a change in zjulab-common alone does not call for a release of the libraries on it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("noxfile.py", "constraints.txt", "pyproject.toml", "tools/", ".github/")


def all_packages() -> list[str]:
    return sorted(p.name for p in (ROOT / "packages").glob("zjulab-*") if (p / "pyproject.toml").is_file())


def changed_packages(ref: str) -> list[str]:
    """Packages touched between ``ref`` and the working tree (committed or not)."""
    out = subprocess.run(
        ["git", "diff", "--name-only", ref],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = out + untracked
    packages = all_packages()
    if any(f.startswith(SHARED) for f in files):
        return packages
    hit = {f.split("/")[1] for f in files if f.startswith("packages/") and f.count("/") >= 2}
    if "zjulab-common" in hit:
        return packages
    return sorted(hit & set(packages))


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def last_tag(package: str) -> str | None:
    """The newest release tag ``package-vX.Y.Z`` (highest version), or None."""
    tags = _git("tag", "--list", f"{package}-v*").split()

    def key(tag: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in tag.rsplit("-v", 1)[1].split("."))
        except ValueError:
            return (-1,)

    valid = [t for t in tags if key(t) != (-1,)]
    return max(valid, key=key) if valid else None


def needs_bump(package: str) -> str | None:
    """Why ``package`` needs a new release, or None when its last tag is current."""
    tag = last_tag(package)
    if tag is None:
        return "never released"
    files = _git("diff", "--name-only", tag, "--", f"packages/{package}").split()
    shipped = [
        f
        for f in files
        if not f.startswith((f"packages/{package}/tests/", f"packages/{package}/benchmarks/"))
    ]
    if shipped:
        return f"{len(shipped)} file(s) changed since {tag}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "--needs-bump":
        for name in all_packages():
            why = needs_bump(name)
            if why:
                print(f"{name}\t{why}")
        return 0
    ref = argv[1] if len(argv) > 1 else "origin/main"
    for name in changed_packages(ref):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
