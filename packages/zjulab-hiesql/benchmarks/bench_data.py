"""Locating the shared SParC/CoSQL data for the benchmark scripts."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def find_data(arg: str | None) -> Path:
    """``--data`` when given, else the first ``shared/data`` with a ``sparc`` folder above this file."""
    if arg:
        return Path(arg)
    for p in [HERE, *HERE.parents]:
        for cand in (p / "shared" / "data", p.parent / "shared" / "data"):
            if (cand / "sparc").is_dir():
                return cand
    raise SystemExit("shared/data not found; pass --data")
