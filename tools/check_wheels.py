"""Check built wheels: each holds its zjulab/NAME package and no zjulab/__init__.py.

python tools/check_wheels.py dist/
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def main(argv: list[str]) -> int:
    wheels = sorted(Path(argv[1]).glob("*.whl"))
    if not wheels:
        print("no wheels found")
        return 1
    bad = 0
    for whl in wheels:
        names = zipfile.ZipFile(whl).namelist()
        dist = whl.name.split("-")[0]
        pkg = dist.removeprefix("zjulab_")
        if "zjulab/__init__.py" in names:
            print(f"{whl.name}: contains zjulab/__init__.py (breaks the namespace)")
            bad += 1
        if f"zjulab/{pkg}/__init__.py" not in names:
            print(f"{whl.name}: missing zjulab/{pkg}/__init__.py")
            bad += 1
        if f"zjulab/{pkg}/py.typed" not in names:
            print(f"{whl.name}: missing zjulab/{pkg}/py.typed")
            bad += 1
        if not bad:
            print(f"{whl.name}: ok ({len(names)} files)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
