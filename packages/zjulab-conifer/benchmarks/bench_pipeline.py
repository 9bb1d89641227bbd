"""Pipeline throughput against ``max_in_flight``, and the cost of resuming a finished run.

The answer stage over a real HTTP round trip: ``OpenAIChatModel`` talking to zjulab-common's
stub ``ChatServer``, which answers every request after a fixed latency (0.2 s by default, what
a busy inference server looks like). Each setting runs on a fresh ``out_dir``; figures are
ratios against ``max_in_flight=1`` in the same process. Resume overhead: the same ``out_dir``
run again, every answer replayed from the request cache, against the original run.

    python benchmarks/bench_pipeline.py [--items 48] [--latency 0.2]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zjulab.common.chat import OpenAIChatModel
from zjulab.common.testing import ChatServer
from zjulab.conifer import AnswerStage, Pipeline, PipelineConfig


class Echo:
    """Answers instantly; the server's ``delay`` supplies the latency."""

    model_id = "bench"

    def generate(self, conversations, **sampling):
        return [f"answer to {c[-1]['content']}" for c in conversations]


def records(n):
    return [
        {"id": f"r{i}", "instruction": f"Describe item number {i} in two short sentences.", "level": 1}
        for i in range(n)
    ]


def run(url, out_dir, n, max_in_flight):
    model = OpenAIChatModel("bench", base_url=url, api_key="bench", max_retries=0, concurrency=64)
    cfg = PipelineConfig(out_dir=out_dir, max_in_flight=max_in_flight, show_progress=False)
    t0 = time.perf_counter()
    res = Pipeline(model, None, cfg, stages=[AnswerStage(system=None)]).run(records(n))
    dt = time.perf_counter() - t0
    assert res.complete and len(res.records) == n
    return dt, res.stats[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    n = args.items
    with ChatServer(Echo()) as server:
        server.delay = args.latency
        print(f"answer stage, {n} items, stub server with {args.latency}s latency per request")
        base = None
        with tempfile.TemporaryDirectory() as root:
            run(server.url, os.path.join(root, "warm"), 2, 1)
            for mif in (1, 4, 16):
                server.max_in_flight = 0
                out = os.path.join(root, f"mif{mif}")
                dt, st = run(server.url, out, n, mif)
                ips = n / dt
                base = base or ips
                peak = getattr(server, "max_in_flight", "?")
                print(
                    f"max_in_flight={mif:<3} {ips:7.2f} items/s  x{ips / base:5.2f} vs 1  "
                    f"({dt:.2f} s, {st.usage.get('calls', 0)} calls, server peak in flight {peak})"
                )
                if mif == 1:
                    before = len(server.requests)
                    replay, st2 = run(server.url, out, n, mif)
                    asked = len(server.requests) - before
                    print(
                        f"resume of the finished max_in_flight=1 run: {replay:.3f} s vs {dt:.2f} s "
                        f"(x{replay / dt:.4f} of the original, {asked} requests, {st2.resumed} replayed)"
                    )


if __name__ == "__main__":
    main()
