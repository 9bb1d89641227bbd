from __future__ import annotations

from zjulab.skillrouter.cli import main


def _skill(root, rel, name, body):
    p = root / rel / "SKILL.md"
    p.parent.mkdir(parents=True)
    p.write_text(f"---\nname: {name}\ndescription: Work with files.\n---\n{body}\n")


def test_index_route_eval_with_bm25(tmp_path, capsys):
    src = tmp_path / "skills"
    _skill(src, "pdf/merge", "pdf-tools", "Merge several PDF documents with pypdf.")
    _skill(src, "pdf/ocr", "pdf-toolkit", "Make scanned PDF pages searchable with OCR.")
    _skill(src, "img/resize", "image-tools", "Resize photos into thumbnails with Pillow.")
    out = tmp_path / "idx"
    assert main(["index", str(src), "--out", str(out), "--retriever", "bm25", "--no-rerank"]) == 0
    assert main(["route", str(out), "make scanned pages searchable", "-k", "2"]) == 0
    text = capsys.readouterr().out
    rows = [ln.split() for ln in text.splitlines() if ln.strip().startswith(("1 ", "2 "))]
    assert rows[0][1] == "pdf/ocr"
    assert "indexed 3 skills" in text


def test_bad_skill_file_exit_code(tmp_path, capsys):
    bad = tmp_path / "skills" / "x" / "SKILL.md"
    bad.parent.mkdir(parents=True)
    bad.write_text("no front matter\n")
    assert (
        main(
            [
                "index",
                str(tmp_path / "skills"),
                "--out",
                str(tmp_path / "i"),
                "--retriever",
                "bm25",
                "--no-rerank",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "SKILL.md:1" in err and "front matter" in err
    assert not (tmp_path / "i").exists()
    assert main(["route", str(tmp_path / "i"), "x"]) == 2


def test_train_encoder_cli_demo_trains_and_refuses_a_foreign_out(tmp_path, tiny_encoder_path, capsys):
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine")
    argv = [
        "--device",
        "cpu",
        "train-encoder",
        "--demo",
        "--model",
        str(tiny_encoder_path),
        "--max-steps",
        "1",
    ]
    assert main([*argv, "--out", str(foreign)]) != 0
    assert "no model trained here" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.md"]
    out = tmp_path / "enc"
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(skillrouter profile)" in text and "1 steps" in text
    assert (out / ".zjulab-skillrouter-model").is_file() and (out / "modules.json").is_file()
    assert main([*argv, "--out", str(out)]) != 0  # an earlier run's model needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
