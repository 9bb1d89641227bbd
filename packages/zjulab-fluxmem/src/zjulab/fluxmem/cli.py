"""Command line: ``zjulab-fluxmem demo | eval-locomo PATH | inspect STORE``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from zjulab.common.cli import run_command
from zjulab.common.errors import ModelNotAvailableError, ZjulabError
from zjulab.common.protocols import ChatModel, TextEncoder

__all__ = ["main"]

_SESSIONS = [
    [
        ("Sam", "My sister Maya just moved to Porto for a new job at a design studio."),
        ("Assistant", "That sounds exciting! How is she finding Porto?"),
        ("Sam", "She loves it. She rents a small flat near the river."),
        ("Sam", "I am training for the Lisbon half marathon in October."),
    ],
    [
        ("Sam", "I ran 18 km on Sunday, my longest run so far."),
        ("Sam", "Maya says the studio wants her to lead the branding team."),
        ("Assistant", "Great news for her career."),
        ("Sam", "I also adopted a cat called Miso last week."),
    ],
]


def _encoder(name: str, device: str) -> TextEncoder:
    if name == "hashing":
        from zjulab.common.testing import HashingEncoder

        return HashingEncoder(256)
    from zjulab.common.defaults import default_encoder

    return default_encoder(device=device)


def _chat(name: str, device: str, max_new_tokens: int) -> ChatModel | None:
    if name == "none":
        return None
    from zjulab.common.defaults import default_chat_model

    try:
        return default_chat_model(device=device, max_new_tokens=max_new_tokens)
    except ModelNotAvailableError as exc:
        print(f"(no chat model: {exc}; running the non-LLM paths)")
        return None


def _edge_counts(mem: Any) -> Counter[str]:
    return Counter(f"{e.kind}/{e.stage}" for e in mem.graph.edges())


def _demo(args: argparse.Namespace) -> int:
    from zjulab.fluxmem.config import FluxMemConfig
    from zjulab.fluxmem.memory import FluxMemory

    t0 = time.perf_counter()
    enc = _encoder(args.encoder, args.device)
    chat = _chat(args.chat, args.device, 48)
    # small budgets keep the demo under a minute on 2 CPU cores with the 135M chat model
    cfg = FluxMemConfig(
        candidate_k=5,
        llm_max_new_tokens=48,
        llm_max_retries=0,
        max_refinement_rounds=2,
        max_consolidation_rounds=3,
    )
    mem = FluxMemory(enc, chat, cfg)
    print(f"FluxMem demo (encoder {enc.model_id}, chat {getattr(chat, 'model_id', 'none')})\n")
    ids: dict[str, str] = {}
    for s, session in enumerate(_SESSIONS, 1):
        msgs = [{"role": "user", "name": who, "content": text} for who, text in session]
        res = mem.add(msgs, user_id="sam", run_id=f"session-{s}")
        for row in res["results"]:
            ids[row["memory"]] = row["id"]
        kinds = Counter(r["kind"] for r in res["results"])
        print(f"session {s}: wrote {dict(kinds)}; {len(res['relations'])} links formed")
    mem.add("Our team standup moved to 9:30 on Mondays.", user_id="alex")
    before = mem.stats()
    edges_before = _edge_counts(mem)
    print(f"\ngraph after writing: nodes {before['nodes']}, edges {before['edges']}")

    query = "Where does Maya live and work?"
    hits = mem.search(query, user_id="sam", top_k=3)["results"]
    print(f"\nsearch (user sam): {query}")
    for h in hits:
        print(f"  {h['score']:.2f} [{h['kind']}] {h['memory']}")
        for c in h["context"][:2]:
            print(f"         ↳ {c['relation']}: {c['memory']}")
    other = mem.search(query, user_id="alex", top_k=3)["results"]
    print(f"search (user alex) sees {len(other)} result(s): {[h['memory'] for h in other]}")

    # pick a question whose evidence the first search misses, so the repair has work to do
    probes = [
        ("What will Maya be in charge of?", "lead the branding team"),
        ("Does Sam own any animals?", "adopted a cat"),
        ("Is Maya happy with her new home?", "She loves it"),
        ("What is Sam's longest run?", "18 km"),
    ]
    question, needle = probes[0]
    for q, n in probes:
        top = [h["id"] for h in mem.search(q, user_id="sam", top_k=3, with_context=False)["results"]]
        if not any(ids[m] in top for m in ids if n in m):
            question, needle = q, n
            break
    evidence = [ids[m] for m in ids if needle in m]
    print(f"\nfeedback: '{question}' was answered wrongly; the needed turn is '{needle}...'")
    rep = mem.feedback(
        question, "failure", evidence, user_id="sam", reason=f"the answer missed: {needle}", top_k=3
    )
    for rnd in rep.rounds:
        print(
            f"  round {rnd.round}: {rnd.action} ({rnd.decided_by}) +{len(rnd.added_edges)} links, "
            f"-{len(rnd.removed_edges)} links, {len(rnd.added_nodes)} new units"
        )
    print(f"  resolved: {rep.resolved}")

    for q, ev in [
        ("How far has Sam run in training?", "18 km"),
        ("Which race is Sam training for?", "half marathon"),
        ("What pet did Sam adopt?", "Miso"),
        ("Where did Maya move?", "Porto"),
    ]:
        mem.feedback(q, "success", [ids[m] for m in ids if ev in m], user_id="sam")
    cons = mem.consolidate(user_id="sam")
    print(
        f"\nconsolidation: {sum(len(c) for c in cons.clusters)} successful trajectories -> k={cons.k} cluster(s)"
    )
    for sk in cons.skills:
        pems_txt = ", ".join(f"{p:.3f}" for p in sk.pems_history)
        print(
            f"  skill '{sk.name}' ({len(sk.steps)} steps), PEMS per round: {pems_txt}, converged: {sk.converged}"
        )
        for i, step in enumerate(sk.steps[:4], 1):
            print(f"     {i}. {step}")

    after = mem.stats()
    edges_after = _edge_counts(mem)
    print(f"\ngraph change: nodes {before['nodes']} -> {after['nodes']}")
    for key in sorted(set(edges_before) | set(edges_after)):
        if edges_before[key] != edges_after[key]:
            print(f"  edges {key}: {edges_before[key]} -> {edges_after[key]}")
    if chat is not None:
        print(f"  chat answers that did not parse and took the non-LLM path: {mem.reasoner.failures}")
    if args.save:
        mem.save(args.save)
        print(f"\nsaved to {args.save} (try: zjulab-fluxmem inspect {args.save})")
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from zjulab.fluxmem.locomo import evaluate_locomo

    enc = _encoder(args.encoder, args.device)
    chat = _chat(args.chat, args.device, 48) if args.f1_questions else None
    rep = evaluate_locomo(args.path, enc, chat_model=chat, limit=args.limit, f1_questions=args.f1_questions)
    print(f"LoCoMo, {len(rep.conversations)} conversation(s): {', '.join(rep.conversations)}")
    print(rep.table())
    return 0


def _stored_encoder(store: str) -> Any:
    import sqlite3

    from zjulab.fluxmem.errors import FluxStoreError
    from zjulab.fluxmem.store import DB_NAME

    db = Path(store) / DB_NAME
    if not db.exists():
        raise FluxStoreError(f"{store} holds no FluxMem store ({DB_NAME} is missing)")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    finally:
        con.close()

    class _StoredDim:
        """Encoder stand-in: inspecting needs the stored name and dimension, never an embedding."""

        model_id = str(meta.get("encoder", "stored"))
        dim = int(meta.get("dim", 1))

        def encode(self, texts: Any, batch_size: int = 32) -> Any:
            raise ZjulabError("inspect does not embed text")

    return _StoredDim(), meta


def _inspect(args: argparse.Namespace) -> int:
    from zjulab.fluxmem.memory import FluxMemory
    from zjulab.fluxmem.render import neighbourhood, to_dot, to_html

    enc, manifest = _stored_encoder(args.store)
    mem = FluxMemory.open(args.store, enc)
    st = mem.stats()
    print(
        f"store {args.store} (format v{manifest.get('version')}, encoder {manifest.get('encoder')}, dim {manifest.get('dim')})"
    )
    print(f"nodes: {st['nodes']}")
    print(f"edges: {st['edges']}")
    print(
        f"scopes: {st['scopes']}, trajectories: {st['trajectories']} ({st['pending_trajectories']} pending)"
    )
    stages = Counter(e.stage for e in mem.graph.edges())
    print(f"edges by stage: {dict(sorted(stages.items()))}")
    centre = args.node
    if centre is None:
        best = max(mem.graph.nodes(), key=lambda n: len(mem.graph.incident_edges(n.id)), default=None)
        centre = best.id if best is not None else None
    if centre is None:
        return 0
    matches = [n.id for n in mem.graph.nodes() if n.id.startswith(centre)]
    if len(matches) != 1:
        print(f"error: node prefix {centre!r} matches {len(matches)} nodes", file=sys.stderr)
        return 2
    ids = neighbourhood(mem, matches[0], hops=args.hops)
    text = to_html(mem, ids) if args.format == "html" else to_dot(mem, ids)
    if args.out:
        from zjulab.common.io import atomic_write_text

        out = Path(args.out)
        if out.is_dir():
            raise ZjulabError(f"--out {out} is a directory; give a file path")
        if out.exists() and not args.force:
            raise ZjulabError(
                f"--out {out} already exists; choose another path or pass --force to replace it"
            )
        atomic_write_text(out, text)
        print(f"wrote the {len(ids)}-node neighbourhood of {matches[0][:8]} to {args.out}")
    else:
        print(text)
    return 0


def _serve_encoder(args: argparse.Namespace) -> TextEncoder:
    if args.encoder == "hashing":
        from zjulab.common.testing import HashingEncoder

        return HashingEncoder(args.dim)
    if args.encoder == "openai":
        import zjulab.common as common

        if not args.embed_model:
            raise ZjulabError("--encoder openai needs --embed-model (and usually --embed-url)")
        try:
            cls = common.OpenAIEncoder  # type: ignore[attr-defined]
        except (ImportError, AttributeError) as exc:
            raise ZjulabError(
                f"this zjulab-common has no OpenAIEncoder ({exc}); upgrade zjulab-common"
            ) from exc
        return cls(args.embed_model, base_url=args.embed_url)  # type: ignore[no-any-return]
    return _encoder("default", args.device)


def _serve(args: argparse.Namespace) -> int:
    from zjulab.fluxmem.memory import FluxMemory
    from zjulab.fluxmem.server import serve

    chat: Any = None
    if args.chat_model:
        from zjulab.common import OpenAIChatModel

        chat = OpenAIChatModel(args.chat_model, base_url=args.chat_url)
    mem = FluxMemory.open(args.store, _serve_encoder(args), chat, reembed=args.reembed)
    print(f"serving {args.store} on http://{args.host}:{args.port}", flush=True)
    try:
        serve(mem, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    finally:
        mem.close()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from zjulab.fluxmem.migrate import migrate_jsonl_store

    counts = migrate_jsonl_store(args.old, args.new)
    print(f"migrated {args.old} -> {args.new}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zjulab-fluxmem``."""
    ap = argparse.ArgumentParser(
        prog="zjulab-fluxmem", description="FluxMem: connectivity-evolving agent memory."
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="a scripted two-session dialogue through all three stages")
    d.add_argument("--encoder", choices=["default", "hashing"], default="default")
    d.add_argument("--chat", choices=["default", "none"], default="default")
    d.add_argument("--device", default="cpu")
    d.add_argument("--save", default=None, help="also save the memory to this directory")
    e = sub.add_parser("eval-locomo", help="evidence recall@5/@10 (and optional F1) vs flat RAG")
    e.add_argument("path", help="locomo10.json")
    e.add_argument("--limit", type=int, default=None, help="first N conversations")
    e.add_argument("--f1-questions", type=int, default=0, help="questions per conversation answered for F1")
    e.add_argument("--encoder", choices=["default", "hashing"], default="default")
    e.add_argument("--chat", choices=["default", "none"], default="default")
    e.add_argument("--device", default="cpu")
    i = sub.add_parser("inspect", help="counts and a DOT/HTML picture of a neighbourhood")
    i.add_argument("store", help="store directory")
    i.add_argument("--node", default=None, help="centre node id or prefix (default: best-connected)")
    i.add_argument("--hops", type=int, default=1)
    i.add_argument("--format", choices=["dot", "html"], default="dot")
    i.add_argument("--out", default=None, help="write the picture here instead of stdout (a new file)")
    i.add_argument("--force", action="store_true", help="replace --out if it already exists")
    m = sub.add_parser("migrate", help="convert a format-1 (JSONL) store directory to a SQLite store")
    m.add_argument("old", help="format-1 store directory (only read)")
    m.add_argument("new", help="new store directory (must not hold a store)")
    sv = sub.add_parser("serve", help="a Mem0-compatible REST server over a store (FastAPI + uvicorn)")
    sv.add_argument("store", help="store directory (created if absent)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument(
        "--encoder",
        choices=["openai", "hashing", "default"],
        default="openai",
        help="openai: a served /v1/embeddings model; hashing: no model; default: local MiniLM ([torch])",
    )
    sv.add_argument("--embed-model", default=None, help="embedding model name on the server")
    sv.add_argument("--embed-url", default=None, help="base URL of the embedding server (…/v1)")
    sv.add_argument("--dim", type=int, default=256, help="dimension of the hashing encoder")
    sv.add_argument(
        "--chat-model", default=None, help="chat model on an OpenAI-compatible server (none: non-LLM paths)"
    )
    sv.add_argument("--chat-url", default=None, help="base URL of the chat server (…/v1)")
    sv.add_argument("--device", default="cpu")
    sv.add_argument("--reembed", action="store_true", help="re-embed a store written with another encoder")
    args = ap.parse_args(argv)
    commands = {
        "demo": _demo,
        "eval-locomo": _eval,
        "inspect": _inspect,
        "migrate": _migrate,
        "serve": _serve,
    }
    return run_command(_checked(commands[args.cmd]), args, prog="zjulab-fluxmem")


def _checked(command: Any) -> Any:
    """``command`` after every text argument has passed the shared text check."""

    def run(args: argparse.Namespace) -> int:
        from zjulab.fluxmem.validation import check_text

        for name, value in sorted(vars(args).items()):
            if isinstance(value, str):
                check_text(value, f"--{name.replace('_', '-')}" if name not in _POSITIONAL else name)
        return int(command(args))

    return run


_POSITIONAL = {"path", "store", "old", "new", "cmd"}


if __name__ == "__main__":
    sys.exit(main())
