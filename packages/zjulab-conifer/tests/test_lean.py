"""Without torch, transformers or peft: the package imports, its CLI answers, and a
torch-backed name raises the typed error with the install line."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    # importing them now fails as if not installed (scipy and scikit-learn are not dependencies
    # either; nltk imports them when present, and scipy breaks on a blocked torch)
    for name in ("torch", "transformers", "peft", "scipy", "sklearn"):
        sys.modules[name] = None
    import zjulab.conifer as c
    from zjulab.conifer.cli import build_model, main
    from zjulab.common.errors import MissingDependencyError
    assert c.default_registry().check("punctuation:no_comma", "No commas here")
    assert c.count_sentences("She got an A. Then she celebrated.") == 2
    try:
        c.sft_trainer([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}], "m", "o")
    except MissingDependencyError as exc:
        print("SFT:", exc)
    try:
        build_model({"kind": "transformers", "model": "x"})
    except MissingDependencyError as exc:
        print("MODEL:", exc)
    loaded = [m for m in ("torch", "transformers", "peft") if sys.modules.get(m) is not None]
    print("LOADED:", loaded)
    """
)


def test_works_without_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "SFT:" in out.stdout and "pip install 'zjulab-conifer[torch]'" in out.stdout.split("MODEL:")[0]
    assert "MODEL:" in out.stdout and "pip install 'zjulab-conifer[torch]'" in out.stdout.split("MODEL:")[1]
    assert "LOADED: []" in out.stdout


def test_import_and_help_leave_heavy_modules_out():
    code = (
        "import sys, zjulab.conifer, zjulab.conifer.cli\n"
        "try:\n    zjulab.conifer.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'datasets', 'trl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
