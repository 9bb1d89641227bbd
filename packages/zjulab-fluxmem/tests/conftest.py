from __future__ import annotations

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
