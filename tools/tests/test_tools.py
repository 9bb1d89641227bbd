"""Tests of the release tools: the wheel check, the version bump and the bump report."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check_wheels = _load("check_wheels")
bump_version = _load("bump_version")
changed_packages = _load("changed_packages")

README = "# zjulab-demo\n\nA demo package.\n"


def _project(tmp_path, scripts=None):
    proj = tmp_path / "packages" / "zjulab-demo"
    proj.mkdir(parents=True)
    lines = ["[project]", 'name = "zjulab-demo"', "[project.scripts]"]
    for k, v in (scripts or {"zjulab-demo": "zjulab.demo.cli:main"}).items():
        lines.append(f'{k} = "{v}"')
    (proj / "pyproject.toml").write_text("\n".join(lines) + "\n")
    (proj / "README.md").write_text(README)
    return proj


GOOD_LOG = "# Changelog\n\n## [Unreleased]\n\n### Fixed\n- a bug\n\n## [1.2.2] - 2026-01-01\n\n- first\n"


def _sdist(path, changelog):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tf:
        files = {"zjulab_demo-1.2.3/README.md": README}
        if changelog is not None:
            files["zjulab_demo-1.2.3/CHANGELOG.md"] = changelog
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _wheel(
    dist,
    *,
    py_typed=True,
    namespace_init=False,
    license_file=True,
    readme=README,
    entry=True,
    changelog=GOOD_LOG,
):
    dist.mkdir(parents=True, exist_ok=True)
    whl = dist / "zjulab_demo-1.2.3-py3-none-any.whl"
    di = "zjulab_demo-1.2.3.dist-info"
    meta = (
        "Metadata-Version: 2.4\nName: zjulab-demo\nVersion: 1.2.3\nLicense-Expression: Apache-2.0\n"
        "Description-Content-Type: text/markdown\n\n" + readme
    )
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("zjulab/demo/__init__.py", "")
        if py_typed:
            zf.writestr("zjulab/demo/py.typed", "")
        if namespace_init:
            zf.writestr("zjulab/__init__.py", "")
        zf.writestr(f"{di}/METADATA", meta)
        if entry:
            zf.writestr(f"{di}/entry_points.txt", "[console_scripts]\nzjulab-demo = zjulab.demo.cli:main\n")
        if license_file:
            zf.writestr(f"{di}/licenses/LICENSE", "Apache License")
    _sdist(dist / "zjulab_demo-1.2.3.tar.gz", changelog)
    return whl


def test_a_good_wheel_passes(tmp_path):
    proj = _project(tmp_path)
    assert check_wheels.check_release(_wheel(tmp_path / "dist"), proj) == []


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"py_typed": False}, "missing zjulab/demo/py.typed"),
        ({"namespace_init": True}, "contains zjulab/__init__.py"),
        ({"license_file": False}, "no licence file"),
        ({"readme": "something else"}, "not the package README"),
        ({"entry": False}, "entry point zjulab-demo"),
        ({"changelog": None}, "ships no CHANGELOG.md"),
        ({"changelog": "Changes\n\n- stuff\n"}, "not in Keep a Changelog format"),
        ({"changelog": "# Changelog\n\n## [1.0.0] - 2026-01-01\n\n- old\n"}, "no section for 1.2.3"),
    ],
)
def test_a_bad_wheel_fails_the_check(tmp_path, kwargs, problem):
    proj = _project(tmp_path)
    problems = check_wheels.check_release(_wheel(tmp_path / "dist", **kwargs), proj)
    assert any(problem in p for p in problems), problems


def test_the_layout_check_alone_catches_the_namespace_file(tmp_path):
    whl = _wheel(tmp_path / "dist", namespace_init=True, py_typed=False)
    assert len(check_wheels.check_layout(whl)) == 2


def _repo(tmp_path):
    pkg = tmp_path / "packages" / "zjulab-demo"
    init = pkg / "src" / "zjulab" / "demo" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text('"""Demo."""\n\n__version__ = "0.1.0"\n')
    (pkg / "pyproject.toml").write_text('[project]\nname = "zjulab-demo"\n')
    (pkg / "CHANGELOG.md").write_text(
        "# Changelog\n\n## [Unreleased]\n\n### Fixed\n- a bug\n\n## [0.1.0] - 2026-01-01\n\n- first\n"
    )
    return pkg, init


def test_bump_rewrites_version_and_changelog(tmp_path):
    pkg, init = _repo(tmp_path)
    assert bump_version.bump(tmp_path, "zjulab-demo", "minor", today="2026-12-03") == "0.2.0"
    assert '__version__ = "0.2.0"' in init.read_text()
    log = (pkg / "CHANGELOG.md").read_text()
    assert log.index("## [Unreleased]") < log.index("## [0.2.0] - 2026-12-03") < log.index("- a bug")
    assert log.index("- a bug") < log.index("## [0.1.0]")


def test_bump_refuses_an_empty_unreleased_section_and_a_downgrade(tmp_path):
    pkg, init = _repo(tmp_path)
    (pkg / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n## [0.1.0] - 2026-01-01\n")
    with pytest.raises(SystemExit, match="empty"):
        bump_version.bump(tmp_path, "zjulab-demo", "patch")
    with pytest.raises(SystemExit, match="not newer"):
        bump_version.next_version("0.2.0", "0.1.9")
    assert '__version__ = "0.1.0"' in init.read_text()  # nothing was written


def test_dry_run_writes_nothing(tmp_path):
    pkg, init = _repo(tmp_path)
    before = (pkg / "CHANGELOG.md").read_text()
    assert bump_version.bump(tmp_path, "zjulab-demo", "patch", dry_run=True) == "0.1.1"
    assert (pkg / "CHANGELOG.md").read_text() == before and '"0.1.0"' in init.read_text()


def test_needs_bump_follows_the_last_tag(tmp_path, monkeypatch):
    pkg, _ = _repo(tmp_path)

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "root")
    git("add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "demo")
    monkeypatch.setattr(changed_packages, "ROOT", tmp_path)
    assert changed_packages.needs_bump("zjulab-demo") == "never released"
    git("tag", "zjulab-demo-v0.1.0")
    git("tag", "zjulab-demo-v0.10.0")  # the highest version wins, not the last in sort order
    git("tag", "zjulab-demo-v0.9.0")
    assert changed_packages.last_tag("zjulab-demo") == "zjulab-demo-v0.10.0"
    assert changed_packages.needs_bump("zjulab-demo") is None
    (pkg / "tests").mkdir()
    (pkg / "tests" / "test_x.py").write_text("")
    git("add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "tests only")
    assert changed_packages.needs_bump("zjulab-demo") is None  # tests are not shipped
    (pkg / "src" / "zjulab" / "demo" / "core.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "code")
    assert changed_packages.needs_bump("zjulab-demo") == "1 file(s) changed since zjulab-demo-v0.10.0"


def test_cli_of_the_wheel_check(tmp_path):
    _wheel(tmp_path / "dist", py_typed=False)
    res = subprocess.run(
        [sys.executable, str(TOOLS / "check_wheels.py"), str(tmp_path / "dist")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "py.typed" in res.stdout


def test_releasing_a_development_version_raises_the_floors_that_name_it(tmp_path):
    pkg, init = _repo(tmp_path)
    init.write_text('__version__ = "0.2.0.dev0"\n')
    lib = tmp_path / "packages" / "zjulab-lib"
    lib.mkdir()
    (lib / "pyproject.toml").write_text(
        'dependencies = ["zjulab-demo>=0.2.0.dev0", "numpy"]\n'
        'torch = ["zjulab-demo[torch,peft]>=0.2.0.dev0", "peft"]\n'
        'old = ["zjulab-demo>=0.1"]\n'
    )
    with pytest.raises(SystemExit, match="under development"):
        bump_version.bump(tmp_path, "zjulab-demo", "minor")
    with pytest.raises(SystemExit, match="not a development version"):
        bump_version.next_version("0.1.0", "release")
    assert bump_version.bump(tmp_path, "zjulab-demo", "release", today="2026-12-04") == "0.2.0"
    assert '__version__ = "0.2.0"' in init.read_text()
    assert (lib / "pyproject.toml").read_text() == (
        'dependencies = ["zjulab-demo>=0.2.0", "numpy"]\n'
        'torch = ["zjulab-demo[torch,peft]>=0.2.0", "peft"]\n'
        'old = ["zjulab-demo>=0.1"]\n'
    )
    assert "## [0.2.0] - 2026-12-04" in (pkg / "CHANGELOG.md").read_text()
