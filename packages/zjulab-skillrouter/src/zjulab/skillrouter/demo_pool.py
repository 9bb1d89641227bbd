"""The demo pool shipped with the package: 200 skills in 40 overlapping groups, 84 tasks.

Each group holds five skills whose names and descriptions nearly coincide (``pdf-tools``,
``pdf-toolkit``, ``pdf-helper``... all "Work with PDF files") while their bodies do different
jobs with different tools (text extraction, merging, form filling, OCR, report generation).
Tasks target one skill (grade 3) and name a related one as partially useful (grade 1); four
tasks need two skills. 44 tasks form the held-out ``test`` split, 40 the ``train`` split.
The content was written for this project; ``scripts/build_demo_pool.py`` regenerates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from zjulab.skillrouter.evaluation import Task, load_tasks
from zjulab.skillrouter.skill import Skill, load_skills_jsonl

__all__ = ["DemoPool", "demo_data_dir", "load_demo_pool"]


def demo_data_dir() -> Path:
    """The folder holding ``demo_skills.jsonl`` and ``demo_tasks.jsonl``."""
    return Path(str(resources.files("zjulab.skillrouter") / "data"))


@dataclass(frozen=True)
class DemoPool:
    """The demo skills and tasks.

    Args:
        skills: The 200 skills.
        train: Tasks for training (``split == "train"``).
        test: Held-out tasks for evaluation (``split == "test"``).
    """

    skills: list[Skill]
    train: list[Task]
    test: list[Task]

    @property
    def tasks(self) -> list[Task]:
        """All tasks, train then test."""
        return [*self.train, *self.test]


def load_demo_pool() -> DemoPool:
    """Load the demo pool from the package data."""
    d = demo_data_dir()
    tasks_path = d / "demo_tasks.jsonl"
    return DemoPool(
        skills=load_skills_jsonl(d / "demo_skills.jsonl"),
        train=load_tasks(tasks_path, split="train"),
        test=load_tasks(tasks_path, split="test"),
    )
