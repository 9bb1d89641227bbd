"""The torch-free core: nothing heavy at import, and a typed error naming the extra when it is missing."""

import subprocess
import sys
import textwrap

import pytest

# Blocks torch, transformers and peft the way an install without the [torch] extra lacks them.
_BLOCK = textwrap.dedent(
    """
    import sys
    for name in ("torch", "transformers", "peft", "accelerate", "sentence_transformers"):
        sys.modules[name] = None
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)], capture_output=True, text=True
    )


def test_import_loads_no_heavy_module():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, zjulab.common, zjulab.common.testing, zjulab.common.cli;"
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'tqdm') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_torch_free_parts_work_without_torch(tmp_path):
    res = _run(
        f"""
        from zjulab.common import write_json, read_json, seed_everything, batched, InputError
        from zjulab.common.testing import HashingEncoder, ScriptedChatModel
        seed_everything(3)
        write_json({str(tmp_path / "a.json")!r}, {{"x": 1}})
        assert read_json({str(tmp_path / "a.json")!r}) == {{"x": 1}}
        assert HashingEncoder(16).encode(["a b"]).shape == (1, 16)
        print("ok")
        """
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "name",
    [
        "YesNoScorer",
        "CrossEncoderScorer",
        "load_causal_lm",
        "resolve_device",
        "TransformersEncoder",
        "tiny_causal_lm",
    ],
)
def test_torch_backed_names_raise_a_typed_error_with_the_install_line(name):
    where = "zjulab.common.testing" if name.startswith("tiny") else "zjulab.common"
    res = _run(
        f"""
        from zjulab.common.errors import MissingDependencyError
        try:
            from {where} import {name} as obj
            obj("cpu") if {name!r} in ("resolve_device",) else obj if {name!r} != "TransformersEncoder" else obj("m")
        except MissingDependencyError as exc:
            print("typed:", exc)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "typed:" in res.stdout
    assert "pip install 'zjulab-common[torch]'" in res.stdout


def test_env_command_runs_without_torch():
    res = _run(
        """
        from zjulab.common.cli import main
        raise SystemExit(main(["env"]))
        """
    )
    assert res.returncode == 0, res.stderr
    assert "not installed" in res.stdout and "hub_cache" in res.stdout
