"""List the packages under packages/ that changed since a git ref.

A change to zjulab-common, to the shared build files (noxfile.py, constraints.txt,
pyproject.toml) or to tools/ marks every package as changed, since they all depend on it.

    python tools/changed_packages.py origin/main
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


def main(argv: list[str]) -> int:
    ref = argv[1] if len(argv) > 1 else "origin/main"
    for name in changed_packages(ref):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
