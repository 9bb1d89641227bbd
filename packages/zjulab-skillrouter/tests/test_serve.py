"""The long-running server, tested with real clients: the mcp SDK's ClientSession over stdio and
streamable HTTP, and httpx for POST /route."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import anyio
import pytest

from zjulab.skillrouter.cli import main

pytest.importorskip("mcp")
httpx = pytest.importorskip("httpx")


@pytest.fixture()
def index(tmp_path):
    src = tmp_path / "skills"
    for rel, body in (
        ("pdf/ocr", "Make scanned PDF pages searchable with tesseract OCR."),
        ("pdf/merge", "Merge several PDF documents into one with pypdf."),
        ("img/resize", "Resize photos into thumbnails with Pillow."),
    ):
        (src / rel).mkdir(parents=True)
        cat = rel.split("/")[0]
        (src / rel / "SKILL.md").write_text(
            f"---\nname: {rel}\ndescription: d\ncategory: {cat}\n---\n{body}\n"
        )
    out = tmp_path / "idx"
    assert main(["index", str(src), "--out", str(out), "--retriever", "bm25", "--no-rerank"]) == 0
    return out


def _cmd(index, *extra):
    return [sys.executable, "-m", "zjulab.skillrouter.cli", "serve", str(index), *extra]


def _payload(result):
    structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
    if structured is not None:
        return structured.get("result", structured)
    return json.loads(result.content[0].text)


def test_mcp_stdio_route_skills(index):
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    async def go():
        params = StdioServerParameters(command=sys.executable, args=_cmd(index, "--transport", "stdio")[1:])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            assert [t.name for t in tools.tools] == ["route_skills"]
            res = await session.call_tool("route_skills", {"query": "searchable scanned pdf", "k": 2})
            bad = await session.call_tool("route_skills", {"query": "  ", "k": 2})
            return _payload(res), bad

    rows, bad = anyio.run(go)
    assert rows[0]["id"] == "pdf/ocr" and rows[0]["rank"] == 1
    assert bad.is_error if hasattr(bad, "is_error") else bad.isError


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def http_server(index):
    port = _free_port()
    proc = subprocess.Popen(_cmd(index, "--port", str(port)), stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def test_http_route_and_errors(http_server):
    assert httpx.get(http_server + "/health").json() == {"status": "ok", "skills": 3}
    r = httpx.post(http_server + "/route", json={"query": "resize my photos", "k": 1})
    assert r.status_code == 200
    assert [x["id"] for x in r.json()["results"]] == ["img/resize"]
    r = httpx.post(http_server + "/route", json={"query": "pdf", "k": 3, "where": {"category": "pdf"}})
    assert {x["id"] for x in r.json()["results"]} == {"pdf/ocr", "pdf/merge"}
    assert httpx.post(http_server + "/route", content=b"{oops").status_code == 400
    r = httpx.post(http_server + "/route", json={"query": "x", "kk": 3})
    assert r.status_code == 400 and "unknown fields" in r.json()["error"]
    assert httpx.post(http_server + "/route", json={"query": "", "k": 1}).status_code == 400


def test_mcp_streamable_http(http_server):
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def go():
        async with streamable_http_client(http_server + "/mcp") as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                return _payload(
                    await session.call_tool("route_skills", {"query": "merge pdf documents", "k": 1})
                )

    rows = anyio.run(go)
    assert rows[0]["id"] == "pdf/merge"
