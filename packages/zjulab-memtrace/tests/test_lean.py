"""memtrace installs and imports without torch, transformers or peft."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

HEAVY = ("torch", "transformers", "peft", "sentence_transformers")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=120
    )


def test_import_and_cli_help_leave_torch_out():
    res = _run(
        f"""
        import sys, contextlib, io
        import zjulab.memtrace, zjulab.memtrace.cli, zjulab.memtrace.render, zjulab.memtrace.otel
        import zjulab.memtrace.bench, zjulab.memtrace.demo, zjulab.memtrace.optimize
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                zjulab.memtrace.cli.main(["--help"])
            except SystemExit:
                pass
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_torch_features_raise_the_typed_error_when_torch_is_missing(tmp_path):
    res = _run(
        f"""
        import sys
        for m in {HEAVY!r}:
            sys.modules[m] = None
        from zjulab.common.errors import MissingDependencyError
        from zjulab.memtrace import EvidenceJudge, Gold, Tracer, attribute
        from zjulab.memtrace.demo import run_demo
        # the torch-free features work
        r = run_demo({str(tmp_path / "h")!r}, encoder="hashing")
        print("hashing demo:", r.attribution.decisive[0].label)
        try:
            run_demo({str(tmp_path / "e")!r}, encoder="embedded")
        except MissingDependencyError as exc:
            print("typed:", exc)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "hashing demo: extract#1" in res.stdout
    assert "typed:" in res.stdout and "pip install 'zjulab-memtrace[torch]'" in res.stdout
