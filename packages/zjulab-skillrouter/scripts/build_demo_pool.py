"""Regenerate the demo pool's package data from ``demo_pool_spec.py``.

Writes ``src/zjulab/skillrouter/data/demo_skills.jsonl`` (one skill a line) and
``demo_tasks.jsonl`` (task, graded relevance, split). Deterministic: the same spec gives the
same bytes.

Usage: python scripts/build_demo_pool.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_pool_spec import DESC_SUFFIXES, GROUPS, MULTI_TASKS  # noqa: E402

OUT = HERE.parent / "src" / "zjulab" / "skillrouter" / "data"


def body(name: str, tool: str, purpose: str, steps: str, code: str, limits: str) -> str:
    """The markdown body of one skill."""
    numbered = "\n".join(
        f"{i}. {s.strip().rstrip('.')[:1].upper()}{s.strip().rstrip('.')[1:]}."
        for i, s in enumerate(steps.split(";"), 1)
    )
    return (
        f"# {name}\n\n{purpose}\n\nTooling: {tool}.\n\n## Steps\n{numbered}\n\n"
        f"## Example\n```\n{code}\n```\n\n## Limits\n{limits}\n"
    )


def main() -> None:
    """Write the two JSONL files."""
    skills, tasks, ids = [], [], {}
    for g, (key, category, names, desc, variants, group_tasks) in enumerate(GROUPS):
        assert len(names) == len(variants) == 5, key
        for i, (tool, purpose, steps, code, limits) in enumerate(variants):
            sid = f"{key}/{names[i]}"
            ids[(key, i)] = sid
            skills.append(
                {
                    "skill_id": sid,
                    "name": names[i],
                    "description": desc + DESC_SUFFIXES[(i + g) % len(DESC_SUFFIXES)],
                    "body": body(names[i], tool, purpose, steps, code, limits),
                    "category": category,
                    "group": key,
                }
            )
        for j, (target, text, partial) in enumerate(group_tasks):
            relevance = {ids[(key, target)]: 3}
            relevance.update({ids[(key, v)]: grade for v, grade in partial.items()})
            tasks.append(
                {
                    "task_id": f"{key}-{j + 1}",
                    "instruction_text": text,
                    "relevant": [ids[(key, target)]],
                    "relevance": relevance,
                    "split": "test" if j == g % 2 else "train",
                    "domain": category,
                }
            )
    for j, (text, grades) in enumerate(MULTI_TASKS):
        relevance = {ids[k]: v for k, v in grades.items()}
        tasks.append(
            {
                "task_id": f"multi-{j + 1}",
                "instruction_text": text,
                "relevant": [s for s, v in relevance.items() if v == 3],
                "relevance": relevance,
                "split": "test",
                "domain": "multi-skill",
            }
        )
    assert len({s["skill_id"] for s in skills}) == len(skills)
    OUT.mkdir(parents=True, exist_ok=True)
    for fname, rows in (("demo_skills.jsonl", skills), ("demo_tasks.jsonl", tasks)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (OUT / fname).write_text(text, encoding="utf-8")
    held_out = sum(t["split"] == "test" for t in tasks)
    print(f"{len(skills)} skills, {len(tasks)} tasks ({held_out} held out) -> {OUT}")  # noqa: T201


if __name__ == "__main__":
    main()
