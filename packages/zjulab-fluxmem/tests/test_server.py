"""The REST server, run as `zjulab-fluxmem serve` and driven by a real HTTP client."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("srv") / "store"
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zjulab.fluxmem.cli",
            "serve",
            str(store),
            "--encoder",
            "hashing",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    yield base, store
    proc.terminate()
    proc.wait(timeout=30)


def test_mem0_routes_round_trip(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post(
            "/memories",
            json={
                "messages": [{"role": "user", "content": "I moved to Lisbon in May"}],
                "user_id": "ana",
                "run_id": "s1",
                "metadata": {"source": "chat"},
            },
        )
        assert r.status_code == 200
        (row,) = r.json()["results"]
        mid = row["id"]
        assert row["memory"] == "I moved to Lisbon in May" and row["event"] == "ADD"
        c.post("/memories", json={"messages": "I adopted a cat", "user_id": "ana", "run_id": "s2"})
        c.post("/memories", json={"messages": "Bob lives in Porto", "user_id": "bob"})
        hits = c.post("/search", json={"query": "moved to Lisbon", "user_id": "ana", "limit": 1}).json()
        assert [h["id"] for h in hits["results"]] == [mid]
        narrowed = c.post("/search", json={"query": "Lisbon", "user_id": "ana", "run_id": "s2"}).json()
        assert [h["memory"] for h in narrowed["results"]] == ["I adopted a cat"]
        listed = c.get("/memories", params={"user_id": "ana"}).json()["results"]
        assert [m["memory"] for m in listed] == ["I moved to Lisbon in May", "I adopted a cat"]
        assert c.get(f"/memories/{mid}").json()["metadata"] == {"source": "chat"}
        assert c.put(f"/memories/{mid}", json={"text": "I moved to Lisbon in June"}).json()["memory"] == (
            "I moved to Lisbon in June"
        )
        events = [h["event"] for h in c.get(f"/memories/{mid}/history").json()]
        assert events[0] == "ADD" and "UPDATE" in events
        fb = c.post(
            "/feedback", json={"query": "Where?", "outcome": "success", "evidence": [mid], "user_id": "ana"}
        )
        assert fb.status_code == 200 and fb.json()["success"] is True
        cons = c.post("/consolidate", json={"user_id": "ana"}).json()
        assert cons["k"] == 1 and len(cons["skills"]) == 1
        g = c.get("/graph", params={"user_id": "ana"}).json()
        assert {n["id"] for n in g["nodes"]} >= {mid} and all("kind" in e for e in g["edges"])
        assert c.delete(f"/memories/{mid}").status_code == 200
        assert c.get(f"/memories/{mid}").status_code == 404
        assert c.delete("/memories", params={"user_id": "ana", "run_id": "s2"}).json()["deleted"] == 1
        assert (
            c.get("/memories", params={"user_id": "bob"}).json()["results"][0]["memory"]
            == "Bob lives in Porto"
        )


def test_errors_are_typed_http_statuses(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post("/memories", json={"messages": "no scope"})
        assert r.status_code == 422 and "one of user_id" in r.json()["detail"]
        r = c.post("/search", json={"query": "x", "user_id": "u", "top_k": 0})
        assert r.status_code == 422 and "top_k" in r.json()["detail"]
        r = c.post("/memories", json={"messages": [{"role": "user"}], "user_id": "u"})
        assert r.status_code == 422 and "no text content" in r.json()["detail"]
        assert c.get("/memories/nope/history").status_code == 404
        assert c.put("/memories/nope", json={"text": "x"}).status_code == 404


def test_two_concurrent_clients_lose_nothing(server):
    base, _ = server
    errors: list[BaseException] = []

    def client(tag: str) -> None:
        try:
            with httpx.Client(base_url=base, timeout=60) as c:
                for i in range(40):
                    r = c.post(
                        "/memories", json={"messages": f"{tag} note {i}", "user_id": "shared", "run_id": tag}
                    )
                    assert r.status_code == 200, r.text
                    c.post("/search", json={"query": f"{tag} note", "user_id": "shared", "run_id": tag})
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with httpx.Client(base_url=base, timeout=30) as c:
        for tag in ("left", "right"):
            got = c.get("/memories", params={"user_id": "shared", "run_id": tag, "limit": 500}).json()[
                "results"
            ]
            assert [m["memory"] for m in got] == [f"{tag} note {i}" for i in range(40)]
