"""Check that a torch-free library installed alone really is torch-free, and measure it.

    python tools/check_lean.py zjulab-hiesql torch transformers peft

Fails if any of the named heavy distributions is installed, or if importing the library (and
running its CLI's ``--help``) imports one of them. Prints installed size and import time as a
JSON line, which the BENCHMARKS tables are made from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path


def installed_mb() -> float:
    """Megabytes under this environment's site-packages."""
    root = Path(sysconfig.get_paths()["purelib"])
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return round(total / 1e6, 1)


def import_seconds(module: str, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of ``python -c 'import module'`` minus the bare interpreter."""

    def run(code: str) -> float:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best = min(best, time.perf_counter() - t0)
        return best

    return round(max(run(f"import {module}") - run("pass"), 0.0), 3)


def main(argv: list[str]) -> int:
    dist, heavy = argv[1], argv[2:]
    name = dist.removeprefix("zjulab-")
    bad = []
    for h in heavy:
        try:
            metadata.version(h)
        except metadata.PackageNotFoundError:
            continue
        bad.append(f"{h} is installed")
    probe = (
        f"import sys, importlib; importlib.import_module('zjulab.{name}');"
        f"import zjulab.{name}.cli as c;"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if loaded.returncode != 0:
        bad.append(f"import zjulab.{name} failed:\n{loaded.stderr}")
    elif loaded.stdout.strip():
        bad.append(f"import zjulab.{name} imported {loaded.stdout.split()}")
    exe = shutil.which(dist, path=os.path.dirname(sys.executable))
    if exe is None:
        bad.append(f"the {dist} command is not installed")
    else:
        helped = subprocess.run([exe, "--help"], capture_output=True, text=True)
        if helped.returncode != 0:
            bad.append(f"{dist} --help failed:\n{helped.stderr}")
    if bad:
        print(f"{dist}: not lean:\n  " + "\n  ".join(bad))
        return 1
    report = {"package": dist, "installed_mb": installed_mb(), "import_s": import_seconds(f"zjulab.{name}")}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
