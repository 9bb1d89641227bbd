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
