"""A long-running router: the index is loaded once, then served over HTTP and MCP.

The Model Context Protocol side uses the official ``mcp`` SDK.

* ``POST /route`` with ``{"query": str, "k": int, "where": {...}, "rerank": bool}`` answers
  ``{"results": [{"id", "name", "rank", "score", "retrieval_score", "rerank_score", "path"}]}``;
  ``GET /health`` answers ``{"status": "ok", "skills": n}``.
* The MCP tool ``route_skills(query, k=5, where=None)`` returns the same records, over stdio
  (``--transport stdio``, for an agent that spawns the server) or streamable HTTP at ``/mcp``
  on the same port as ``/route``.

Routing is thread-safe (:class:`~zjulab.skillrouter.router.SkillRouter` serialises its model
calls), so concurrent requests get the answers sequential calls would.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from zjulab.common.deps import require
from zjulab.common.errors import InputError, ZjulabError
from zjulab.skillrouter.router import SkillRouter

__all__ = ["SERVE_EXTRA", "build_server", "route_records"]

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


def build_server(router: SkillRouter, *, name: str = "zjulab-skillrouter") -> Any:
    """An ``mcp`` ``MCPServer`` with the ``route_skills`` tool and the ``/route``, ``/health`` routes.

    Raises:
        MissingDependencyError: ``mcp`` is not installed (``zjulab-skillrouter[serve]``).
    """
    require("mcp", SERVE_EXTRA, feature="zjulab-skillrouter serve")
    from mcp.server.mcpserver import MCPServer
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
        return route_records(router, query, k, where)

    @server.custom_route("/route", methods=["POST"])
    async def route_http(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        unknown = sorted(set(body) - {"query", "k", "where", "rerank"})
        if unknown:
            return JSONResponse({"error": f"unknown fields: {unknown}"}, status_code=400)
        try:
            results = route_records(
                router, body.get("query"), body.get("k", 5), body.get("where"), body.get("rerank")
            )
        except ZjulabError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
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
