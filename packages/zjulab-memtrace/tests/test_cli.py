import json

from zjulab.memtrace.cli import main


def test_demo_show_and_attribute(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--encoder", "hashing"]) == 0
    text = capsys.readouterr().out
    assert "decisive error: extract#1" in text and "information_loss" in text
    assert (out / "trace.html").is_file() and (out / "trace.dot").is_file()
    att = json.loads((out / "trace.attribution.json").read_text())
    assert att["decisive"][0]["label"] == "extract#1" and att["verified"]

    assert main(["show", str(out / "trace.json"), "--out", str(tmp_path / "pic")]) == 0
    assert "#d62728" in (tmp_path / "pic.dot").read_text()  # highlighted from the saved attribution

    # re-attributing the saved trace: no live handles, so the result is unverified but the same
    assert (
        main(
            [
                "attribute",
                str(out / "trace.json"),
                "--gold",
                "Biscuit",
                "--evidence",
                "Nora: Big news, I adopted a rescue dog last Saturday and named her Biscuit.",
                "--out",
                str(tmp_path / "a.json"),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "a.json").read_text())
    assert again["decisive"][0]["label"] == "extract#1" and not again["verified"]


def test_cli_errors(tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def _runs(tmp_path):
    out = tmp_path / "d"
    yield ["demo", "--out", str(out), "--encoder", "hashing"]
    yield ["show", str(out / "trace.json"), "--out", str(tmp_path / "pic")]
    yield ["attribute", str(out / "trace.json"), "--gold", "Biscuit", "--out", str(tmp_path / "a.json")]
    yield ["show", str(tmp_path / "missing.json")]  # an error message too


def test_no_ansi_escapes_captured_or_with_no_color(tmp_path, capsys, monkeypatch):
    for argv in _runs(tmp_path):
        main(argv)
        cap = capsys.readouterr()
        assert "\x1b[" not in cap.out + cap.err, argv
    # NO_COLOR wins even on a terminal that asks for colour
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    for argv in _runs(tmp_path / "again"):
        main(argv)
        cap = capsys.readouterr()
        assert "\x1b[" not in cap.out + cap.err, argv
