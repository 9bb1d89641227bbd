"""Check that an environment holds one zjulab library and nothing of its siblings.

    python tools/check_isolation.py zjulab-fluxmem

Imports the library, then fails if any zjulab distribution other than it and zjulab-common
is installed, or if importing it loaded a sibling's module.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata


def main(argv: list[str]) -> int:
    dist = argv[1]
    name = dist.removeprefix("zjulab-")
    module = importlib.import_module(f"zjulab.{name}")
    allowed = {"zjulab-common", dist}
    installed = {
        (d.metadata["Name"] or "").lower()
        for d in metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith("zjulab-")
    }
    extra = sorted(installed - allowed)
    loaded = sorted(
        m for m in sys.modules if m.startswith("zjulab.") and m.split(".")[1] not in {"common", name}
    )
    if extra or loaded:
        print(f"{dist}: siblings installed {extra}, sibling modules imported {loaded}")
        return 1
    print(f"{dist}: isolated ok (zjulab.{name} from {module.__file__}; installed {sorted(installed)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
