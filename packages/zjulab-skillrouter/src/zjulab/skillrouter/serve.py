"""A long-running router: the index is loaded once, then served over HTTP and MCP.

The Model Context Protocol side uses the official ``mcp`` SDK.

* ``POST /route`` with ``{"query": str, "k": int, "where": {...}, "rerank": bool}`` answers
  ``{"results": [{"id", "name", "rank", "score", "retrieval_score", "rerank_score", "path"}]}``;
  ``GET /health`` answers ``{"status": "ok", "skills": n}``.
* The MCP tool ``route_skills(query, k=5, where=None)`` returns the same records, over stdio
  (``--transport stdio``, for an agent that spawns the server) or streamable HTTP at ``/mcp``
  on the same port as ``/route``.

Routing is thread-safe (:class:`~zjulab.skillrouter.router.SkillRouter` serialises its model
calls), so concurrent requests get the answers sequential calls would. Routes run in worker
threads, so a slow route (a reranker, a served encoder retrying) never stalls ``/health`` or
the MCP sessions.

Errors are typed for the calling agent (:func:`error_record`): ``POST /route`` answers
``{"error": message, "type": error class, "retryable": bool}`` with 400 for a bad request, 502
when a served model behind the router failed (retryable), 500 otherwise; ``route_skills``
returns an MCP tool error whose text starts with the error class and says whether to retry.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zjulab.common.deps import require
from zjulab.common.errors import InputError, ZjulabError
from zjulab.skillrouter.router import SkillRouter

__all__ = ["SERVE_EXTRA", "build_server", "error_record", "route_records"]

logger = logging.getLogger(__name__)

SERVE_EXTRA = "pip install 'zjulab-skillrouter[serve]'"


def route_records(
    router: SkillRouter, query: Any, k: Any = 5, where: Any = None, rerank: Any = None
) -> list[dict[str, Any]]:
    """Validate one request and route it; the records ``POST /route`` and ``route_skills`` return.

    Raises:
        InputError: A field has the wrong type or value.
    """
    if not isinstance(query, str) or not query.strip():
        raise InputError("'query' must be a non-empty string")
    if isinstance(k, bool) or not isinstance(k, int):
        raise InputError(f"'k' must be an integer, got {k!r}")
    k = min(k, len(router))
    if where is not None and not isinstance(where, dict):
        raise InputError("'where' must be an object of field -> value(s)")
    if rerank is not None and not isinstance(rerank, bool):
        raise InputError("'rerank' must be true or false")
    return [r.to_dict() for r in router.route(query, k=k, where=where, rerank=rerank)]


def error_record(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body that report ``exc`` to a client.

    400: the request is at fault (an :class:`~zjulab.common.errors.InputError`: empty query, bad
    ``k``, malformed ``where``). 502: a served model the router calls (embeddings, reranker)
    failed after its retries or answered garbage (:class:`~zjulab.common.errors.RemoteModelError`);
    the same request may succeed later. 500: anything else (a misconfigured or changed encoder,
    a corrupt index, a bug); retrying will not help.
    """
    from zjulab.common.errors import RemoteModelError

    if isinstance(exc, InputError):
        status, retryable = 400, False
    elif isinstance(exc, RemoteModelError):
        status, retryable = 502, True
    else:
        status, retryable = 500, False
    return status, {
        "error": str(exc) or type(exc).__name__,
        "type": type(exc).__name__,
        "retryable": retryable,
    }


def _tool_message(exc: BaseException) -> str:
    status, body = error_record(exc)
    hint = {
        400: "fix the arguments and call again",
        502: "a model server behind the router failed; retry later",
        500: "the router cannot serve this; retrying will not help",
    }[status]
    return f"{body['type']}: {body['error']} ({hint})"


def build_server(router: SkillRouter, *, name: str = "zjulab-skillrouter") -> Any:
    """An ``mcp`` ``MCPServer`` with the ``route_skills`` tool and the ``/route``, ``/health`` routes.

    Raises:
        MissingDependencyError: ``mcp`` is not installed (``zjulab-skillrouter[serve]``).
    """
    require("mcp", SERVE_EXTRA, feature="zjulab-skillrouter serve")
    import functools

    import anyio.to_thread
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    server: Any = MCPServer(
        name,
        instructions=(
            f"Routes a task to the skills an agent should load, out of {len(router)} indexed skills. "
            "Call route_skills with the task text; load the top results."
        ),
    )

    @server.tool()
    def route_skills(query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The k skills to load for a task, best first (id, name, rank, score, stage scores, path).

        Args:
            query: The task, in the user's words.
            k: How many skills to return.
            where: Optional metadata filter, e.g. {"category": "pdf"} or {"tags": ["ocr"]}.
        """
        try:
            return route_records(router, query, k, where)
        except Exception as exc:  # the SDK would hide the message of anything but a ToolError
            if not isinstance(exc, ZjulabError):
                logger.exception("route_skills failed")
            raise ToolError(_tool_message(exc)) from exc

    def _bad(message: str) -> JSONResponse:
        status, record = error_record(InputError(message))
        return JSONResponse(record, status_code=status)

    @server.custom_route("/route", methods=["POST"])
    async def route_http(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return _bad(f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _bad("the body must be a JSON object")
        unknown = sorted(set(body) - {"query", "k", "where", "rerank"})
        if unknown:
            return _bad(f"unknown fields: {unknown}; accepted: query, k, where, rerank")
        call = functools.partial(
            route_records, router, body.get("query"), body.get("k", 5), body.get("where"), body.get("rerank")
        )
        try:
            results = await anyio.to_thread.run_sync(call)  # the event loop keeps serving meanwhile
        except Exception as exc:
            if not isinstance(exc, ZjulabError):
                logger.exception("POST /route failed")
            status, record = error_record(exc)
            return JSONResponse(record, status_code=status)
        return JSONResponse({"results": results})

    @server.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "skills": len(router)})

    return server


def serve(router: SkillRouter, *, transport: str = "http", host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the server until interrupted (``transport="http"``: ``/route``, ``/health``, ``/mcp``)."""
    server = build_server(router)
    if transport == "stdio":
        server.run("stdio")
        return
    require("uvicorn", SERVE_EXTRA, feature="zjulab-skillrouter serve")
    import uvicorn

    logger.info("serving %d skills on http://%s:%d (/route, /health, /mcp)", len(router), host, port)
    uvicorn.run(server.streamable_http_app(host=host), host=host, port=port, log_level="warning")
