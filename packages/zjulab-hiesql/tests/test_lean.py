"""The torch-free core: importing the library, its CLI help and the evaluator load no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_and_torch_free_features_leave_torch_out():
    out = _run(
        """
        import sys
        import zjulab.hiesql as h
        from zjulab.hiesql.cli import _build
        from zjulab.hiesql import Evaluator, SQLiteSandbox, build_linking_graph, LLMParser, Text2SQLSession
        from zjulab.hiesql import schema_from_sqlite, extract_sql, check_sql
        import zjulab.hiesql._sandbox_worker
        try:
            _build().parse_args(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", ["HieSqlParser", "BimodalPretrainer", "SQLDecoder"])
def test_torch_backed_name_without_torch_is_a_typed_error(name):
    out = _run(
        f"""
        import sys
        sys.modules["torch"] = None  # simulates an install without the [torch] extra
        import zjulab.hiesql as h
        from zjulab.common.errors import MissingDependencyError
        try:
            getattr(h, {name!r})
        except MissingDependencyError as exc:
            print("typed:", exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("typed:")
    assert "pip install 'zjulab-hiesql[torch]'" in out.stdout


def test_direct_import_of_torch_module_is_a_typed_error():
    out = _run(
        """
        import sys
        sys.modules["torch"] = None
        from zjulab.common.errors import MissingDependencyError
        try:
            import zjulab.hiesql.parser
        except MissingDependencyError as exc:
            print("typed:", exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'zjulab-hiesql[torch]'" in out.stdout
