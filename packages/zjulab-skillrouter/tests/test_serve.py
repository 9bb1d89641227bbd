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


@pytest.fixture()
def served_encoder_server():
    """The router on a served encoder (zjulab.common's /v1/embeddings client against the ChatServer
    double), itself served over HTTP + MCP in this process."""
    import threading

    import uvicorn

    from zjulab.common.embeddings import OpenAIEncoder
    from zjulab.common.testing import ChatServer, HashingEncoder
    from zjulab.skillrouter import RouterConfig, Skill, SkillRouter
    from zjulab.skillrouter.serve import build_server

    skills = [
        Skill(name="pdf-merge", description="PDF", body="merge pdf files with pypdf", id="merge"),
        Skill(name="pdf-ocr", description="PDF", body="ocr scanned pdf pages", id="ocr"),
        Skill(name="img", description="images", body="resize photos with pillow", id="img"),
    ]
    with ChatServer(encoder=HashingEncoder(64), models=["emb"]) as upstream:
        enc = OpenAIEncoder("emb", base_url=upstream.url, max_retries=1, backoff=0.01, timeout=5)
        router = SkillRouter(enc, None, RouterConfig(profile="embedded", rerank=False)).index(skills)
        port = _free_port()
        app = build_server(router).streamable_http_app()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base, upstream
        server.should_exit = True
        thread.join(10)


def test_a_failing_model_server_behind_the_router_is_a_typed_retryable_502(served_encoder_server):
    base, upstream = served_encoder_server
    ask = {"query": "merge pdf files", "k": 2}
    good = httpx.post(base + "/route", json=ask, timeout=30)
    assert good.status_code == 200 and good.json()["results"][0]["id"] == "merge"
    for fault in (
        {"status": 500},
        {"status": 429, "retry_after": 0.05},
        {"status": 200, "body": b'{"data": ['},
    ):
        upstream.fail_next(2, **fault)  # more than the encoder's retries
        r = httpx.post(base + "/route", json=ask, timeout=30)
        assert r.status_code == 502, (fault, r.text)
        assert r.json()["type"] == "RemoteModelError" and r.json()["retryable"] is True
        again = httpx.post(base + "/route", json=ask, timeout=30)  # the upstream is back
        assert again.status_code == 200 and again.json() == good.json()
    upstream.fail_next(1, 401)  # a wrong key is no request error and no reason to retry
    r = httpx.post(base + "/route", json=ask, timeout=30)
    assert r.status_code == 500 and r.json()["type"] == "ConfigError" and r.json()["retryable"] is False
    r = httpx.post(base + "/route", json={"query": "merge", "k": 0}, timeout=30)
    assert r.status_code == 400 and r.json()["type"] == "InvalidKError" and "k=0" in r.json()["error"]


def test_a_slow_route_does_not_stall_health_or_other_clients(served_encoder_server):
    import threading

    base, upstream = served_encoder_server
    upstream.fail_next(1, 200, delay=2.0)  # answers, but late
    slow = {}
    t = threading.Thread(
        target=lambda: slow.update(
            r=httpx.post(base + "/route", json={"query": "ocr scans", "k": 1}, timeout=30)
        )
    )
    t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    assert httpx.get(base + "/health", timeout=10).status_code == 200
    waited = time.perf_counter() - t0
    t.join(30)
    assert slow["r"].status_code == 200 and slow["r"].json()["results"][0]["id"] == "ocr"
    assert waited < 1.5, f"/health waited {waited:.2f} s for a route in flight"


def test_mcp_tool_errors_name_the_error_and_what_to_do(served_encoder_server):
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    base, upstream = served_encoder_server

    async def go():
        async with streamable_http_client(base + "/mcp") as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                bad_k = await session.call_tool("route_skills", {"query": "merge pdf", "k": 0})
                upstream.fail_next(2, 500)
                down = await session.call_tool("route_skills", {"query": "merge pdf", "k": 1})
                ok = await session.call_tool("route_skills", {"query": "merge pdf", "k": 1})
                return bad_k, down, ok

    bad_k, down, ok = anyio.run(go)
    text = bad_k.content[0].text
    assert "InvalidKError: k=0 must be in [1, 3]" in text and "fix the arguments" in text
    assert "RemoteModelError" in down.content[0].text and "retry later" in down.content[0].text
    assert _payload(ok)[0]["id"] == "merge"
