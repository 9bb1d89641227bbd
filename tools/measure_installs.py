"""Installed size and import time of each library, before and after a change, in one run.

    python tools/measure_installs.py --before 437a97b [zjulab-hiesql ...]

For each package (default: the torch-free ones) and each of two trees (the ``--before`` commit,
unpacked with ``git archive``, and the working tree), installs zjulab-common and the package
from that tree into a fresh venv without extras, under constraints.txt, then measures the
venv's site-packages in MB and the best-of-three wall time of ``import zjulab.NAME`` minus a bare
interpreter start. Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEAN = ["zjulab-conifer", "zjulab-fluxmem", "zjulab-hiesql", "zjulab-memtrace", "zjulab-skillrouter"]

PROBE = """
import json, os, subprocess, sys, sysconfig, time
root = sysconfig.get_paths()["purelib"]
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs
           if not os.path.islink(os.path.join(d, f)))
def best(code):
    t = []
    for _ in range(3):
        t0 = time.perf_counter(); subprocess.run([sys.executable, "-c", code], check=True)
        t.append(time.perf_counter() - t0)
    return min(t)
mod = sys.argv[1]
heavy = subprocess.run([sys.executable, "-c", f"import sys, {mod}; print(int('torch' in sys.modules))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"mb": round(size / 1e6), "import_s": round(best(f"import {mod}") - best("pass"), 2),
                  "torch_imported": heavy == "1"}))
"""


def unpack(ref: str, dest: Path) -> Path:
    data = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(dest, filter="data")
    return dest


def measure(tree: Path, package: str, work: Path) -> dict:
    venv = work / f"venv-{package}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            str(tree / "packages" / "zjulab-common"),
            str(tree / "packages" / package),
        ],
        check=True,
    )
    out = subprocess.run(
        [py, "-c", PROBE, f"zjulab.{package.removeprefix('zjulab-')}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    return json.loads(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git ref of the 'before' tree")
    ap.add_argument("packages", nargs="*", default=LEAN)
    args = ap.parse_args(argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        before = unpack(args.before, Path(tmp) / "before")
        for package in args.packages:
            b = measure(before, package, Path(tmp))
            a = measure(ROOT, package, Path(tmp))
            rows.append((package, b, a))
            print(json.dumps({"package": package, "before": b, "after": a}), file=sys.stderr)
    print(
        "| library | installed MB before | after | import s before | after | torch imported before / after |"
    )
    print("|---|---|---|---|---|---|")
    for package, b, a in rows:
        print(
            f"| {package} | {b['mb']} | {a['mb']} | {b['import_s']} | {a['import_s']} | "
            f"{'yes' if b['torch_imported'] else 'no'} / {'yes' if a['torch_imported'] else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
