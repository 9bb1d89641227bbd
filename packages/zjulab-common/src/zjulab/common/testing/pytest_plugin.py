"""Pytest fixtures and markers shared by every zjulab package (auto-loaded via ``pytest11``).

Markers: ``gpu`` (skipped unless CUDA is available), ``slow``. Fixtures build tiny models once
per session; models are returned in eval mode, so tests that train should copy them or call
the factory functions in :mod:`zjulab.common.testing` directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers."""
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests on machines without CUDA."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA device" if torch is not None else "needs torch and a CUDA device"
    )
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def find_shared_data(start: Path | None = None) -> Path | None:
    """Locate the project's ``shared/data`` directory.

    ``$ZJULAB_SHARED_DATA`` wins; otherwise a ``shared/data`` folder beside any ancestor of
    ``start`` (default: the working directory) is used.
    """
    env = os.environ.get("ZJULAB_SHARED_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    here = (start or Path.cwd()).resolve()
    for parent in [here, *here.parents]:
        cand = parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data(request: pytest.FixtureRequest) -> Path:
    """The ``shared/data`` directory; skips the test when it is absent."""
    found = find_shared_data(Path(str(request.config.rootpath))) or find_shared_data(Path(__file__))
    if found is None:
        pytest.skip("../shared/data is not present (set ZJULAB_SHARED_DATA to its path)")
    return found


def _skip_without_torch() -> None:
    """Tiny models need the ``[torch]`` extra; a torch-free install skips their tests, saying so."""
    pytest.importorskip("torch", reason="needs the [torch] extra (torch is not installed)")
    pytest.importorskip("transformers", reason="needs the [torch] extra (transformers is not installed)")


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with a ChatML template."""
    _skip_without_torch()
    from zjulab.common.testing import tiny

    return tiny.tiny_tokenizer("causal")


@pytest.fixture(scope="session")
def tiny_causal_lm() -> tuple[Any, Any]:
    """``(model, tokenizer)``: a random Qwen2-style causal LM (shared; do not train it)."""
    _skip_without_torch()
    from zjulab.common.testing import tiny

    return tiny.tiny_causal_lm()


@pytest.fixture(scope="session")
def tiny_encoder() -> tuple[Any, Any]:
    """``(model, tokenizer)``: a random BERT encoder (shared; do not train it)."""
    _skip_without_torch()
    from zjulab.common.testing import tiny

    return tiny.tiny_encoder()


@pytest.fixture(scope="session")
def tiny_cross_encoder() -> tuple[Any, Any]:
    """``(model, tokenizer)``: a random one-logit BERT cross-encoder (shared)."""
    _skip_without_torch()
    from zjulab.common.testing import tiny

    return tiny.tiny_cross_encoder()


@pytest.fixture(scope="session")
def tiny_causal_lm_path(tmp_path_factory: pytest.TempPathFactory, tiny_causal_lm: tuple[Any, Any]) -> Path:
    """Directory holding the tiny causal LM, loadable by path."""
    from zjulab.common.testing import tiny

    return tiny.save_tiny(*tiny_causal_lm, tmp_path_factory.mktemp("tiny-causal-lm"))


@pytest.fixture(scope="session")
def tiny_encoder_path(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: tuple[Any, Any]) -> Path:
    """Directory holding the tiny encoder, loadable by path."""
    from zjulab.common.testing import tiny

    return tiny.save_tiny(*tiny_encoder, tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_chat_model(tiny_causal_lm: tuple[Any, Any]) -> Any:
    """A :class:`~zjulab.common.chat.TransformersChatModel` over the tiny causal LM, on CPU."""
    from zjulab.common.chat import TransformersChatModel

    model, tok = tiny_causal_lm
    return TransformersChatModel(model, tok, device="cpu", max_new_tokens=8)


@pytest.fixture()
def hashing_encoder() -> Any:
    """A 64-dimensional :class:`~zjulab.common.testing.HashingEncoder`."""
    from zjulab.common.testing import HashingEncoder

    return HashingEncoder(64)


@pytest.fixture()
def scripted_chat() -> Iterator[Any]:
    """Factory: ``scripted_chat(["reply 1", "reply 2"], default=None)``."""
    from zjulab.common.testing import ScriptedChatModel

    yield ScriptedChatModel


@pytest.fixture()
def needs_torch() -> None:
    """Skip unless torch and transformers are installed (the ``[torch]`` extras).

    Documentation examples that run a local model request it in their fence,
    ```` ```python fixture:needs_torch ````, so the same page runs in a full install and skips
    those blocks, with this reason, in a torch-free one.
    """
    _skip_without_torch()
