"""A Mem0-compatible REST server over a :class:`~zjulab.fluxmem.memory.FluxMemory` (FastAPI).

Routes follow Mem0's REST server (same paths and payload shapes), plus FluxMem's own:

=========================================  =================================================
``POST /memories``                         add (``messages``, ``user_id``/``agent_id``/``run_id``,
                                           ``metadata``, ``infer``)
``GET /memories``                          get_all (scope ids as query parameters, ``top_k``)
``GET /memories/{id}``                     get
``PUT /memories/{id}``                     update (``{"text", "metadata"}``; ``data``/``memory`` = text)
``DELETE /memories/{id}``                  delete (with everything derived from it)
``DELETE /memories``                       delete_all (scope ids as query parameters)
``GET /memories/{id}/history``             history
``POST /search``                           search (``query``, scope ids at the top level or in
                                           ``filters``, ``top_k``, ``threshold``)
``POST /reset``                            reset
``POST /feedback``                         Stage II (``query``, ``outcome``, ``evidence``, ...)
``POST /consolidate``                      Stage III
``GET /graph``                             the nodes and edges of a scope, as JSON
``GET /health``                            liveness and counts
=========================================  =================================================

Status codes and messages follow Mem0's server (``server/main.py``) where a Mem0 client can
tell: bad input and a missing scope are 400 with the typed error's message as ``detail``
(naming the field, e.g. a lone surrogate in ``messages[0].content``), a body that does not fit
the schema is FastAPI's 422, unknown ids 404, store errors 500. The ``message`` texts of update,
delete, delete-all and reset are Mem0's. Requests are served from a thread pool; the memory
serialises its own changes, and several server processes may share one store (SQLite's writer
lock). Needs the ``[server]`` extra (``fastapi``, ``uvicorn``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from zjulab.common.deps import require
from zjulab.fluxmem.errors import FluxStoreError, MemoryInputError, MemoryNotFoundError, ScopeError

if TYPE_CHECKING:
    from zjulab.fluxmem.memory import FluxMemory

__all__ = ["SERVER_EXTRA", "create_app", "serve"]

logger = logging.getLogger(__name__)

SERVER_EXTRA = "pip install 'zjulab-fluxmem[server]'"


# Mem0's defaults and texts (mem0ai/mem0, server/main.py and mem0/memory/main.py)
MEM0_TOP_K = 20
MEM0_LIST_MAX = 1000
MSG_ADD_SCOPE = "At least one identifier (user_id, agent_id, run_id) is required."
MSG_SCOPE = "At least one identifier is required."
MSG_DELETED = "Memory deleted successfully"
MSG_DELETED_ALL = "All relevant memories deleted"
MSG_RESET = "All memories reset"
_SCOPE_KEYS = ("user_id", "agent_id", "run_id")


class Scoped(BaseModel):
    """Scope ids of a request body (combined filters)."""

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None


class AddBody(Scoped):
    messages: Any
    metadata: dict[str, Any] | None = None
    infer: bool | None = None
    # Mem0 fields FluxMem does not implement: refused when set, never silently dropped
    expiration_date: str | None = None
    memory_type: str | None = None
    prompt: str | None = None


class SearchBody(Scoped):
    query: str
    top_k: int | None = None
    limit: int | None = None
    filters: dict[str, Any] | None = None
    threshold: float | None = None
    explain: bool | None = None
    show_expired: bool | None = None
    rerank: bool | None = None


class FeedbackBody(Scoped):
    query: str
    outcome: bool | str
    evidence: list[str] | None = None
    reason: str = ""
    action: str | None = None
    top_k: int = 10


class ConsolidateBody(Scoped):
    pass


def _unsupported(**fields: Any) -> None:
    """Refuse a Mem0 option FluxMem does not implement, instead of ignoring it."""
    for name, value in fields.items():
        if value not in (None, False):
            raise MemoryInputError(f"{name} is not supported by the FluxMem server (got {value!r})")


def _scope(user_id: Any, agent_id: Any, run_id: Any, missing: str) -> dict[str, str]:
    got = {k: v for k, v in zip(_SCOPE_KEYS, (user_id, agent_id, run_id)) if v}
    if not got:
        raise ScopeError(missing)
    return got


def _search_scope(body: SearchBody) -> tuple[dict[str, str], dict[str, Any]]:
    """Scope ids from the top level and from ``filters`` (Mem0's current form), and the rest."""
    filters = dict(body.filters or {})
    scope = {k: v for k, v in zip(_SCOPE_KEYS, (body.user_id, body.agent_id, body.run_id)) if v}
    for key in _SCOPE_KEYS:
        if key in filters:
            value = filters.pop(key)
            if not isinstance(value, str):
                raise ScopeError(f"filters[{key!r}] must be a string id, got {value!r}")
            if key in scope and scope[key] != value:
                raise ScopeError(f"{key} is {scope[key]!r} at the top level but {value!r} in filters")
            scope[key] = value
    if not scope:
        raise ScopeError(
            "filters must contain at least one of: user_id, agent_id, run_id (or give them at the top level)"
        )
    return scope, filters


def _limit(top_k: int | None, limit: int | None, default: int, name: str = "top_k") -> int:
    if top_k is not None and limit is not None and top_k != limit:
        raise MemoryInputError(f"{name} ({top_k}) and limit ({limit}) disagree; give one")
    value = top_k if top_k is not None else limit
    return default if value is None else value


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
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(FluxStoreError)
    async def _store(request: Request, exc: FluxStoreError) -> Any:
        logger.error("store error: %s", exc)
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **memory.stats()}

    @app.post("/memories")
    def add(body: AddBody) -> dict[str, Any]:
        _unsupported(expiration_date=body.expiration_date, memory_type=body.memory_type, prompt=body.prompt)
        return memory.add(
            body.messages,
            **_scope(body.user_id, body.agent_id, body.run_id, MSG_ADD_SCOPE),
            metadata=body.metadata,
            infer=True if body.infer is None else body.infer,
        )

    @app.get("/memories")
    def get_all(
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        top_k: int | None = Query(None, ge=0, le=MEM0_LIST_MAX),
        limit: int | None = Query(None, ge=0, le=MEM0_LIST_MAX),
    ) -> dict[str, Any]:
        ids = _scope(user_id, agent_id, run_id, MSG_SCOPE)
        n = _limit(top_k, limit, MEM0_TOP_K)
        if n == 0:
            return {"results": []}
        return memory.get_all(**ids, limit=n)

    @app.get("/memories/{memory_id}")
    def get(memory_id: str) -> dict[str, Any]:
        return memory.get(memory_id)

    @app.put("/memories/{memory_id}")
    def update(memory_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI idiom)
        # Mem0's MemoryUpdate: {"text", "metadata", "expiration_date"}; "data"/"memory" are
        # older spellings of "text"
        unknown = sorted(set(body) - {"text", "data", "memory", "metadata", "expiration_date"})
        if unknown:
            raise MemoryInputError(
                f"unknown update field(s) {unknown}; the body takes text, metadata and expiration_date"
            )
        texts = {k: body[k] for k in ("text", "data", "memory") if body.get(k) is not None}
        if len(set(map(repr, texts.values()))) > 1:
            raise MemoryInputError(f"update body gives different texts in {sorted(texts)}; give one")
        text = next(iter(texts.values()), None)
        if text is not None and not isinstance(text, str):
            raise MemoryInputError(f"text must be a string, got {type(text).__name__}")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise MemoryInputError(f"metadata must be an object, got {type(metadata).__name__}")
        _unsupported(expiration_date=body.get("expiration_date"))
        if text is None and metadata is None:
            raise MemoryInputError("At least one of text, metadata, or expiration_date must be provided.")
        return memory.update(memory_id, text, metadata=metadata)

    @app.delete("/memories/{memory_id}")
    def delete(memory_id: str) -> dict[str, Any]:
        memory.delete(memory_id)
        return {"message": MSG_DELETED, "id": memory_id}

    @app.delete("/memories")
    def delete_all(
        user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        n = memory.delete_all(**_scope(user_id, agent_id, run_id, MSG_SCOPE))
        return {"message": MSG_DELETED_ALL, "deleted": n}

    @app.get("/memories/{memory_id}/history")
    def history(memory_id: str) -> list[dict[str, Any]]:
        return memory.history(memory_id)

    @app.post("/search")
    def search(body: SearchBody) -> dict[str, Any]:
        _unsupported(explain=body.explain, rerank=body.rerank)
        ids, filters = _search_scope(body)
        n = _limit(body.top_k, body.limit, MEM0_TOP_K)
        if n == 0:
            return {"results": []}
        return memory.search(
            body.query,
            **ids,
            top_k=n,
            filters=filters or None,
            threshold=body.threshold,
        )

    @app.post("/reset")
    def reset() -> dict[str, Any]:
        memory.reset()
        return {"message": MSG_RESET}

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


def serve(memory: FluxMemory, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    """Run the server until interrupted (uvicorn).

    Raises:
        MissingDependencyError: fastapi or uvicorn is not installed.
    """
    uvicorn = require("uvicorn", SERVER_EXTRA, feature="the FluxMem REST server")
    app = create_app(memory)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
