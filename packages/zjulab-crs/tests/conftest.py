"""Shared fixtures: a small synthetic corpus and its task samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from zjulab.crs.loaders import UNeedCorpus
from zjulab.crs.samples import TaskSamples, build_task_samples
from zjulab.crs.synthetic import SyntheticConfig, synthetic_corpus

UNEED_SUBDIR = Path("uneed/LLM-CRS/UniMIND/available_resources/datasets/u_need")


@pytest.fixture(scope="session")
def small_corpus() -> UNeedCorpus:
    return synthetic_corpus(
        SyntheticConfig(dialogues_per_category=8, items_per_category=20, users=15, candidates=10)
    )


@pytest.fixture(scope="session")
def small_train(small_corpus: UNeedCorpus) -> TaskSamples:
    return build_task_samples(small_corpus, "train")


@pytest.fixture(scope="session")
def uneed_dir(shared_data: Path) -> Path:
    path = shared_data / UNEED_SUBDIR
    if not path.is_dir():
        pytest.skip("U-NEED samples are not present")
    return path
