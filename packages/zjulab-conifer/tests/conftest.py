import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def ifeval_path(shared_data: Path) -> Path:
    path = shared_data / "ifeval" / "input_data.jsonl"
    if not path.is_file():
        pytest.skip("IFEval prompts not staged")
    return path


@pytest.fixture(scope="session")
def conifer_samples(shared_data: Path) -> Path:
    path = shared_data / "conifer" / "conifer_data_samples"
    if not path.is_dir():
        pytest.skip("Conifer samples not staged")
    return path


def load(name: str):
    return json.loads((DATA / name).read_text(encoding="utf-8"))
