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
        hits = c.post("/search", json={"query": "moved to Lisbon", "user_id": "ana", "top_k": 1}).json()
        assert [h["id"] for h in hits["results"]] == [mid]
        narrowed = c.post("/search", json={"query": "Lisbon", "user_id": "ana", "run_id": "s2"}).json()
        assert [h["memory"] for h in narrowed["results"]] == ["I adopted a cat"]
        listed = c.get("/memories", params={"user_id": "ana"}).json()["results"]
        assert [m["memory"] for m in listed] == ["I moved to Lisbon in May", "I adopted a cat"]
        assert c.get(f"/memories/{mid}").json()["metadata"] == {"source": "chat"}
        r = c.put(f"/memories/{mid}", json={"text": "I moved to Lisbon in June"}).json()
        assert r["message"] == "Memory updated successfully!" and r["memory"] == "I moved to Lisbon in June"
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
        # Mem0's server: a missing identifier is 400 with this detail (server/main.py add_memory)
        r = c.post("/memories", json={"messages": "no scope"})
        assert r.status_code == 400
        assert r.json()["detail"] == "At least one identifier (user_id, agent_id, run_id) is required."
        for method, path in (("GET", "/memories"), ("DELETE", "/memories")):
            r = c.request(method, path)
            assert r.status_code == 400 and r.json()["detail"] == "At least one identifier is required."
        # bad values reaching the memory are 400 (Mem0 maps its ValueErrors to 400)
        r = c.post("/search", json={"query": "x", "user_id": "u", "top_k": -1})
        assert r.status_code == 400 and "top_k" in r.json()["detail"]
        r = c.post("/memories", json={"messages": [{"role": "user"}], "user_id": "u"})
        assert r.status_code == 400 and "no text content" in r.json()["detail"]
        # a body that does not fit the schema is FastAPI's 422, as in Mem0
        assert c.post("/search", json={"user_id": "u"}).status_code == 422
        assert c.get("/memories/nope/history").status_code == 404
        assert c.put("/memories/nope", json={"text": "x"}).status_code == 404


SURROGATE_BODIES = [
    ("/memories", '{"messages": "a\\ud800b", "user_id": "u"}', "messages[0].content"),
    (
        "/memories",
        '{"messages": [{"role": "user", "content": "\\udfff"}], "user_id": "u"}',
        "messages[0].content",
    ),
    ("/memories", '{"messages": "ok", "user_id": "u\\ud800"}', "user_id"),
    ("/memories", '{"messages": "ok", "user_id": "u", "metadata": {"k": "\\ud800"}}', "metadata['k']"),
    ("/search", '{"query": "\\ud800", "user_id": "u"}', "query"),
    ("/search", '{"query": "x", "filters": {"user_id": "u", "speaker": "\\ud800"}}', "filters['speaker']"),
    ("/feedback", '{"query": "q", "outcome": "failure", "user_id": "u", "reason": "\\ud800"}', "reason"),
]


@pytest.mark.parametrize(("path", "raw", "field"), SURROGATE_BODIES)
def test_a_lone_surrogate_is_a_400_naming_the_field(server, path, raw, field):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        before = c.get("/health").json()["nodes"]
        r = c.post(path, content=raw.encode("ascii"), headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith(f"{field}: character") and "surrogate" in r.json()["detail"]
        assert c.get("/health").json()["nodes"] == before  # nothing written


def test_put_with_a_surrogate_is_a_400_and_changes_nothing(server):
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        mid = c.post("/memories", json={"messages": "keep me", "user_id": "sur"}).json()["results"][0]["id"]
        for raw, field in (('{"text": "\\ud800"}', "text"), ('{"metadata": {"\\ud800": 1}}', "metadata key")):
            r = c.put(
                f"/memories/{mid}", content=raw.encode("ascii"), headers={"content-type": "application/json"}
            )
            assert r.status_code == 400 and r.json()["detail"].startswith(field), r.text
        got = c.get(f"/memories/{mid}").json()
        assert got["memory"] == "keep me" and got["metadata"] == {}


def test_put_applies_metadata_like_mem0(server):
    """Mem0's PUT body is MemoryUpdate {text, metadata, expiration_date}; metadata is merged."""
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        mid = c.post(
            "/memories", json={"messages": "I like tea", "user_id": "meta", "metadata": {"a": 1, "b": 2}}
        ).json()["results"][0]["id"]
        r = c.put(f"/memories/{mid}", json={"metadata": {"b": 3, "c": "x"}})
        assert r.status_code == 200 and r.json()["message"] == "Memory updated successfully!"
        got = c.get(f"/memories/{mid}").json()
        assert got["memory"] == "I like tea" and got["metadata"] == {"a": 1, "b": 3, "c": "x"}
        r = c.put(f"/memories/{mid}", json={"text": "I like green tea", "metadata": {"a": None}})
        got = c.get(f"/memories/{mid}").json()
        assert got["memory"] == "I like green tea" and got["metadata"] == {"a": None, "b": 3, "c": "x"}
        events = [
            (h["event"], h["old_memory"], h["new_memory"]) for h in c.get(f"/memories/{mid}/history").json()
        ]
        assert events[-2:] == [
            ("UPDATE", "I like tea", "I like tea"),
            ("UPDATE", "I like tea", "I like green tea"),
        ]
        # Mem0's own check when neither is given (mem0/memory/main.py update)
        r = c.put(f"/memories/{mid}", json={})
        assert r.status_code == 400
        assert r.json()["detail"] == "At least one of text, metadata, or expiration_date must be provided."
        # what FluxMem does not implement is refused, never dropped
        for body in ({"text": "x", "expiration_date": "2030-01-01"}, {"text": "x", "colour": "red"}):
            r = c.put(f"/memories/{mid}", json=body)
            assert r.status_code == 400, body
        assert c.get(f"/memories/{mid}").json()["memory"] == "I like green tea"


def test_mem0_defaults_and_messages(server):
    """Literals from mem0ai/mem0 server/main.py and mem0/memory/main.py."""
    base, _ = server
    with httpx.Client(base_url=base, timeout=60) as c:
        msgs = [{"role": "user", "content": f"note number {i} about gardening"} for i in range(25)]
        assert c.post("/memories", json={"messages": msgs, "user_id": "many"}).status_code == 200
        # Memory.search(top_k=20) and Memory.get_all(top_k=20)
        assert (
            len(c.post("/search", json={"query": "gardening note", "user_id": "many"}).json()["results"])
            == 20
        )
        assert len(c.get("/memories", params={"user_id": "many"}).json()["results"]) == 20
        assert len(c.get("/memories", params={"user_id": "many", "top_k": 25}).json()["results"]) == 25
        assert c.get("/memories", params={"user_id": "many", "top_k": 0}).json() == {"results": []}
        assert c.get("/memories", params={"user_id": "many", "top_k": 1001}).status_code == 422
        # scope ids inside filters (Mem0's current form) narrow like top-level ones
        hits = c.post(
            "/search", json={"query": "gardening", "filters": {"user_id": "many"}, "top_k": 3}
        ).json()
        assert len(hits["results"]) == 3 and {h["user_id"] for h in hits["results"]} == {"many"}
        r = c.post("/search", json={"query": "gardening", "user_id": "many", "filters": {"user_id": "other"}})
        assert r.status_code == 400
        assert c.post("/search", json={"query": "x", "user_id": "many", "explain": True}).status_code == 400
        r = c.post("/memories", json={"messages": "x", "user_id": "many", "expiration_date": "2030-01-01"})
        assert r.status_code == 400 and "expiration_date" in r.json()["detail"]
        mid = c.get("/memories", params={"user_id": "many", "top_k": 1}).json()["results"][0]["id"]
        assert c.delete(f"/memories/{mid}").json()["message"] == "Memory deleted successfully"
        r = c.delete("/memories", params={"user_id": "many"}).json()
        assert r["message"] == "All relevant memories deleted" and r["deleted"] == 24


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
            got = c.get("/memories", params={"user_id": "shared", "run_id": tag, "top_k": 500}).json()[
                "results"
            ]
            assert [m["memory"] for m in got] == [f"{tag} note {i}" for i in range(40)]
