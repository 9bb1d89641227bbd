"""An asyncio front for :class:`~zjulab.fluxmem.memory.FluxMemory`.

Every method runs the synchronous one in a worker thread (:func:`asyncio.to_thread`); the
memory's own lock serialises them, so concurrent coroutines never interleave inside a write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zjulab.common.protocols import ChatModel, TextEncoder
from zjulab.fluxmem.config import FluxMemConfig
from zjulab.fluxmem.memory import FluxMemory

__all__ = ["AsyncFluxMemory"]


class AsyncFluxMemory:
    """Awaitable twin of :class:`FluxMemory` (same arguments, same results).

    Args:
        memory: The synchronous memory to wrap.
    """

    def __init__(self, memory: FluxMemory) -> None:
        self.memory = memory

    @classmethod
    def create(
        cls, encoder: TextEncoder, chat_model: ChatModel | None = None, config: FluxMemConfig | None = None
    ) -> AsyncFluxMemory:
        """A new in-memory store."""
        return cls(FluxMemory(encoder, chat_model, config))

    @classmethod
    async def open(
        cls,
        path: str | Path,
        encoder: TextEncoder,
        chat_model: ChatModel | None = None,
        config: FluxMemConfig | None = None,
        *,
        reembed: bool = False,
        autosave: bool = True,
    ) -> AsyncFluxMemory:
        """Open a store (see :meth:`FluxMemory.open`)."""
        mem = await asyncio.to_thread(
            FluxMemory.open, path, encoder, chat_model, config, reembed=reembed, autosave=autosave
        )
        return cls(mem)

    async def add(
        self, messages: str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str], **kwargs: Any
    ) -> dict[str, Any]:
        """See :meth:`FluxMemory.add`."""
        return await asyncio.to_thread(self.memory.add, messages, **kwargs)

    async def search(self, query: str, **kwargs: Any) -> dict[str, Any]:
        """See :meth:`FluxMemory.search`."""
        return await asyncio.to_thread(self.memory.search, query, **kwargs)

    async def get(self, memory_id: str) -> dict[str, Any]:
        """See :meth:`FluxMemory.get`."""
        return await asyncio.to_thread(self.memory.get, memory_id)

    async def get_all(self, **kwargs: Any) -> dict[str, Any]:
        """See :meth:`FluxMemory.get_all`."""
        return await asyncio.to_thread(self.memory.get_all, **kwargs)

    async def update(
        self,
        memory_id: str,
        data: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        """See :meth:`FluxMemory.update`."""
        return await asyncio.to_thread(self.memory.update, memory_id, data, metadata=metadata, text=text)

    async def delete(self, memory_id: str) -> dict[str, Any]:
        """See :meth:`FluxMemory.delete`."""
        return await asyncio.to_thread(self.memory.delete, memory_id)

    async def delete_all(self, **kwargs: Any) -> int:
        """See :meth:`FluxMemory.delete_all`."""
        return await asyncio.to_thread(self.memory.delete_all, **kwargs)

    async def history(self, memory_id: str) -> list[dict[str, Any]]:
        """See :meth:`FluxMemory.history`."""
        return await asyncio.to_thread(self.memory.history, memory_id)

    async def reset(self) -> None:
        """See :meth:`FluxMemory.reset`."""
        await asyncio.to_thread(self.memory.reset)

    async def feedback(
        self, query: str, outcome: bool | str, evidence: Iterable[str] | None = None, **kwargs: Any
    ) -> Any:
        """See :meth:`FluxMemory.feedback`."""
        return await asyncio.to_thread(self.memory.feedback, query, outcome, evidence, **kwargs)

    async def consolidate(
        self, *, replay: Callable[[str, dict[str, Any]], bool] | None = None, **kwargs: Any
    ) -> Any:
        """See :meth:`FluxMemory.consolidate`."""
        return await asyncio.to_thread(self.memory.consolidate, replay=replay, **kwargs)

    async def save(self, path: str | Path | None = None) -> Path:
        """See :meth:`FluxMemory.save`."""
        return await asyncio.to_thread(self.memory.save, path)

    async def trajectories(self, **scope: str | None) -> list[dict[str, Any]]:
        """See :meth:`FluxMemory.trajectories`."""
        return await asyncio.to_thread(self.memory.trajectories, **scope)

    async def close(self) -> None:
        """See :meth:`FluxMemory.close`."""
        await asyncio.to_thread(self.memory.close)
