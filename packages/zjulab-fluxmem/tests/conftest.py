from __future__ import annotations

import json

import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import FluxMemConfig, FluxMemory


@pytest.fixture
def enc() -> HashingEncoder:
    return HashingEncoder(256)


@pytest.fixture
def bare_config() -> FluxMemConfig:
    """No automatic links: every edge in a test is one the test expects."""
    return FluxMemConfig(max_links=0, link_adjacent=False)


@pytest.fixture
def mem(enc: HashingEncoder) -> FluxMemory:
    return FluxMemory(enc)


@pytest.fixture
def tiny_locomo_file(tmp_path):
    """A two-session LoCoMo-shaped file with messy evidence ids."""
    return _tiny_locomo(tmp_path / "l.json")


def _tiny_locomo(path):
    conv = {
        "speaker_a": "Ana",
        "speaker_b": "Bo",
        "session_1_date_time": "1 May 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "I adopted a puppy named Rex"},
            {"speaker": "Bo", "dia_id": "D1:2", "text": "Cute! What breed is Rex?"},
            {"speaker": "Ana", "dia_id": "D1:3", "text": "A beagle", "blip_caption": "a photo of a beagle"},
        ],
        "session_2_date_time": "9 May 2023",
        "session_2": [
            {"speaker": "Bo", "dia_id": "D2:1", "text": "I started pottery classes"},
            {"speaker": "Ana", "dia_id": "D2:2", "text": "Rex chewed my shoes again"},
        ],
    }
    qa = [
        {"question": "What breed is Ana's puppy?", "answer": "beagle", "evidence": ["D1:03"], "category": 4},
        {"question": "What did Bo start?", "answer": "pottery classes", "evidence": ["D:2:1"], "category": 2},
        {
            "question": "What is Rex?",
            "answer": "a beagle puppy",
            "evidence": ["D1:1; D1:3", "D9:9"],
            "category": 1,
        },
        {"question": "Unknown", "adversarial_answer": "x", "evidence": [], "category": 5},
    ]
    path.write_text(json.dumps([{"sample_id": "conv-t", "conversation": conv, "qa": qa}]))
    return path
