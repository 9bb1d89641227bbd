"""A Mem0-compatible REST server over a :class:`~zjulab.fluxmem.memory.FluxMemory` (FastAPI).

Routes follow Mem0's REST server (same paths and payload shapes), plus FluxMem's own:

=========================================  =================================================
``POST /memories``                         add (``messages``, ``user_id``/``agent_id``/``run_id``,
                                           ``metadata``, ``infer``)
``GET /memories``                          get_all (scope ids as query parameters, ``limit``)
``GET /memories/{id}``                     get
``PUT /memories/{id}``                     update (``{"text": ...}``; ``data``/``memory`` accepted)
``DELETE /memories/{id}``                  delete (with everything derived from it)
``DELETE /memories``                       delete_all (scope ids as query parameters)
``GET /memories/{id}/history``             history
``POST /search``                           search (``query``, scope ids, ``top_k``/``limit``,
                                           ``filters``, ``threshold``)
``POST /reset``                            reset
``POST /feedback``                         Stage II (``query``, ``outcome``, ``evidence``, ...)
``POST /consolidate``                      Stage III
``GET /graph``                             the nodes and edges of a scope, as JSON
``GET /health``                            liveness and counts
=========================================  =================================================

Typed errors map to HTTP statuses: unknown ids 404, bad input and missing scope 422 (with the
message as ``detail``), store errors 500. Requests are served from a thread pool; the memory
serialises its own changes, and several server processes may share one store (SQLite's writer
lock). Needs the ``[server]`` extra (``fastapi``, ``uvicorn``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from zjulab.common.deps import require
from zjulab.fluxmem.errors import FluxStoreError, MemoryInputError, MemoryNotFoundError

if TYPE_CHECKING:
    from zjulab.fluxmem.memory import FluxMemory

__all__ = ["SERVER_EXTRA", "create_app", "serve"]

logger = logging.getLogger(__name__)

SERVER_EXTRA = "pip install 'zjulab-fluxmem[server]'"


class Scoped(BaseModel):
    """Scope ids of a request body (combined filters)."""

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None


class AddBody(Scoped):
    messages: Any
    metadata: dict[str, Any] | None = None
    infer: bool = True


class SearchBody(Scoped):
    query: str
    top_k: int | None = None
    limit: int | None = None
    filters: dict[str, Any] | None = None
    threshold: float | None = None


class FeedbackBody(Scoped):
    query: str
    outcome: bool | str
    evidence: list[str] | None = None
    reason: str = ""
    action: str | None = None
    top_k: int = 10


class ConsolidateBody(Scoped):
    pass


def create_app(memory: FluxMemory) -> Any:
    """The FastAPI application serving ``memory``.

    Raises:
        MissingDependencyError: fastapi or pydantic is not installed.
    """
    fastapi = require("fastapi", SERVER_EXTRA, feature="the FluxMem REST server")
    from fastapi import Body, Query, Request
    from fastapi.responses import JSONResponse

    app = fastapi.FastAPI(title="zjulab-fluxmem", description="Mem0-compatible FluxMem memory server")

    def scope(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict[str, str]:
        return {k: v for k, v in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)) if v}

    @app.exception_handler(MemoryNotFoundError)
    async def _not_found(request: Request, exc: MemoryNotFoundError) -> Any:
        return JSONResponse(status_code=404, content={"detail": str(exc).strip("'\"")})

    @app.exception_handler(MemoryInputError)
    async def _bad_input(request: Request, exc: MemoryInputError) -> Any:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(FluxStoreError)
    async def _store(request: Request, exc: FluxStoreError) -> Any:
        logger.error("store error: %s", exc)
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **memory.stats()}

    @app.post("/memories")
    def add(body: AddBody) -> dict[str, Any]:
        return memory.add(
            body.messages,
            **scope(body.user_id, body.agent_id, body.run_id),
            metadata=body.metadata,
            infer=body.infer,
        )

    @app.get("/memories")
    def get_all(
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = Query(100, ge=1),
    ) -> dict[str, Any]:
        return memory.get_all(**scope(user_id, agent_id, run_id), limit=limit)

    @app.get("/memories/{memory_id}")
    def get(memory_id: str) -> dict[str, Any]:
        return memory.get(memory_id)

    @app.put("/memories/{memory_id}")
    def update(memory_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI idiom)
        text = body.get("text", body.get("data", body.get("memory")))
        if not isinstance(text, str):
            raise MemoryInputError('update body must be {"text": "..."}')
        return memory.update(memory_id, text)

    @app.delete("/memories/{memory_id}")
    def delete(memory_id: str) -> dict[str, Any]:
        memory.delete(memory_id)
        return {"message": "Memory deleted successfully", "id": memory_id}

    @app.delete("/memories")
    def delete_all(
        user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        n = memory.delete_all(**scope(user_id, agent_id, run_id))
        return {"message": "Memories deleted successfully", "deleted": n}

    @app.get("/memories/{memory_id}/history")
    def history(memory_id: str) -> list[dict[str, Any]]:
        return memory.history(memory_id)

    @app.post("/search")
    def search(body: SearchBody) -> dict[str, Any]:
        top_k = body.top_k if body.top_k is not None else (body.limit if body.limit is not None else 10)
        return memory.search(
            body.query,
            **scope(body.user_id, body.agent_id, body.run_id),
            top_k=top_k,
            filters=body.filters,
            threshold=body.threshold,
        )

    @app.post("/reset")
    def reset() -> dict[str, Any]:
        memory.reset()
        return {"message": "All memories reset"}

    @app.post("/feedback")
    def feedback(body: FeedbackBody) -> dict[str, Any]:
        rep = memory.feedback(
            body.query,
            body.outcome,
            body.evidence,
            **scope(body.user_id, body.agent_id, body.run_id),
            reason=body.reason,
            action=body.action,
            top_k=body.top_k,
        )
        return dataclasses.asdict(rep)

    @app.post("/consolidate")
    def consolidate(body: ConsolidateBody = Body(default_factory=ConsolidateBody)) -> dict[str, Any]:  # noqa: B008 (FastAPI idiom)
        rep = memory.consolidate(**scope(body.user_id, body.agent_id, body.run_id))
        return dataclasses.asdict(rep)

    @app.get("/graph")
    def graph(
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = Query(1000, ge=1),
    ) -> dict[str, Any]:
        nodes = memory.get_all(**scope(user_id, agent_id, run_id), limit=limit)["results"]
        ids = {n["id"] for n in nodes}
        edges = [
            dataclasses.asdict(e)
            for e in memory.graph.edges_touching(sorted(ids))
            if e.source in ids and e.target in ids
        ]
        return {"nodes": nodes, "edges": edges}

    return app


def serve(memory: FluxMemory, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the server until interrupted (uvicorn).

    Raises:
        MissingDependencyError: fastapi or uvicorn is not installed.
    """
    uvicorn = require("uvicorn", SERVER_EXTRA, feature="the FluxMem REST server")
    app = create_app(memory)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
