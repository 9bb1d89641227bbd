"""Command line: ``zjulab-skillrouter index | route | eval | train-encoder | train-reranker | demo``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from zjulab.common.cli import run_command
from zjulab.skillrouter.config import MiningConfig, RouterConfig, TrainEncoderConfig, TrainRerankerConfig
from zjulab.skillrouter.evaluation import EvalReport, Task, evaluate, format_table, load_tasks
from zjulab.skillrouter.router import RoutedSkill, SkillRouter
from zjulab.skillrouter.skill import Skill, load_skills

DEMO_TASKS = (
    "These PDFs came off a photocopier and nothing in them can be searched or copied. Make them searchable.",
    "Find out how our checkout API behaves when 500 users hit it at once; report tail latency.",
    "Our parser tests pass on release 1.2 but fail on main; find the commit that broke them.",
)


def _router_from_args(args: argparse.Namespace, config: RouterConfig) -> SkillRouter:
    if args.embedded:
        return SkillRouter.embedded(config, device=args.device)
    return SkillRouter(args.encoder, args.reranker, config, device=args.device)


def _config(args: argparse.Namespace) -> RouterConfig:
    return RouterConfig(
        profile="embedded" if args.embedded else args.profile,
        encoder_max_length=args.max_length,
        reranker_max_length=args.max_length,
        retriever=args.retriever,
        rerank=not args.no_rerank,
        fields=args.fields,
        index_type=args.index_type,
        retrieve_k=args.retrieve_k,
        rerank_k=min(args.rerank_k, args.retrieve_k),
    )


def _print_routes(query: str, routed: Sequence[RoutedSkill]) -> None:
    print(f"\ntask: {query}")
    print(f"{'rank':>4}  {'skill id':<34} {'retrieval':>9} {'rerank':>8}  what its body says")
    for r in routed:
        rr = f"{r.rerank_score:8.2f}" if r.rerank_score is not None else f"{'-':>8}"
        first = next((ln for ln in r.skill.body.splitlines()[1:] if ln.strip()), "")[:60]
        print(f"{r.rank:>4}  {r.skill.id:<34} {r.retrieval_score:9.3f} {rr}  {first}")


def _cmd_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out)
    if not args.update:
        SkillRouter._check_target(out, args.overwrite)  # refuse before spending time encoding
    skills = load_skills(args.source, errors="skip" if args.skip_bad else "strict")
    for bad in getattr(skills, "skipped", []):
        print(f"skipped {bad}", file=sys.stderr)
    if args.update:
        router = SkillRouter.load(out, device=args.device)
        wanted = {s.id for s in skills}
        gone = [s.id for s in router.skills if s.id not in wanted]
        counts = router.upsert(skills)
        if gone:
            router.remove(gone)
        router.save(out, overwrite=True)
        print(
            f"updated {out}: {counts['added']} added, {counts['updated']} re-encoded, "
            f"{counts['unchanged']} unchanged, {len(gone)} removed"
        )
        return 0
    router = _router_from_args(args, _config(args)).index(skills)
    router.save(out, overwrite=args.overwrite)
    print(f"indexed {len(router)} skills from {args.source} -> {args.out}")
    return 0


def _parse_where(text: str | None) -> dict[str, Any] | None:
    import json

    from zjulab.common.errors import InputError

    if not text:
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--where {text!r} is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(where, dict):
        raise InputError(f'--where must be a JSON object such as {{"category": "pdf"}}, got {text!r}')
    return where


def _cmd_route(args: argparse.Namespace) -> int:
    import json

    router = SkillRouter.load(args.index, device=args.device)
    where = _parse_where(args.where)
    routed = router.route(args.task, k=args.k, rerank=False if args.no_rerank else None, where=where)
    if args.json:
        for r in routed:
            print(json.dumps(r.to_dict(), ensure_ascii=False))
    else:
        _print_routes(args.task, routed)
    return 0


def _tasks(args: argparse.Namespace) -> list[Task]:
    if args.demo:
        from zjulab.skillrouter.demo_pool import load_demo_pool

        return load_demo_pool().test
    if not args.tasks:
        raise SystemExit("give --tasks (and --relevance) or --demo")
    return load_tasks(args.tasks, args.relevance, mode=args.mode)


def _cmd_eval(args: argparse.Namespace) -> int:
    tasks = _tasks(args)
    if args.index:
        router = SkillRouter.load(args.index, device=args.device)
    else:
        if args.demo:
            from zjulab.skillrouter.demo_pool import load_demo_pool

            skills: list[Skill] = load_demo_pool().skills
        elif args.pool:
            skills = load_skills(args.pool)
        else:
            raise SystemExit("give an INDEX, --pool PATH or --demo")
        router = _router_from_args(args, _config(args)).index(skills)
    report = evaluate(
        router, tasks, depth=args.depth, rerank=False if args.no_rerank else None, name=args.name
    )
    metrics = ("Hit@1", "MRR@10", "nDCG@10", "Recall@10", "Recall@50", "FullCoverage@10")
    if args.json:
        import json

        print(
            json.dumps(
                {
                    "name": report.name,
                    "n_tasks": report.n_tasks,
                    "mean": report.mean,
                    "strata": report.strata,
                    "skipped": report.skipped,
                }
            )
        )
        return 0
    print(format_table([report], metrics))
    counts = report.strata.get("counts", {})
    for stratum in ("single", "multi"):
        if report.strata.get(stratum):
            row = "  ".join(
                f"{m} {100 * report.strata[stratum][m]:.1f}" for m in ("Hit@1", "MRR@10", "Recall@10")
            )
            print(f"  {stratum} ({int(counts.get(stratum, 0))} tasks): {row}")
    if report.skipped:
        print(f"({len(report.skipped)} tasks had no ground-truth skill in the pool and were skipped)")
    return 0


def _training_data(args: argparse.Namespace) -> tuple[list[Skill], list[tuple[str, list[str], list[str]]]]:
    if args.demo:
        from zjulab.skillrouter.demo_pool import load_demo_pool

        pool = load_demo_pool()
        skills, tasks = pool.skills, pool.train
    else:
        if not (args.pool and args.tasks):
            raise SystemExit("give --pool and --tasks (with --relevance), or --demo")
        skills = load_skills(args.pool)
        tasks = load_tasks(args.tasks, args.relevance)
    ids = {s.id for s in skills}
    # every graded-relevant skill (grade > 0) stays out of the query's negatives
    pairs = [
        (t.query, sorted(t.relevant & ids), sorted(k for k, g in t.grades.items() if g > 0 and k in ids))
        for t in tasks
        if t.relevant & ids
    ]
    return skills, pairs


#: ``train-encoder --demo`` settings sized for a shared 2-core CPU (about 30 s in all):
#: 32-token texts (name, description, the start of the body), 4 queries a batch, one mined
#: dense negative per query (the other queries of the batch add in-batch negatives).
DEMO_ENCODER = {"max_seq_length": 32, "batch_size": 4, "mining": MiningConfig(1, 0, 0, 0)}


def _cmd_train_encoder(args: argparse.Namespace) -> int:
    from zjulab.common.encoders import SentenceTransformerEncoder
    from zjulab.skillrouter.encoder_training import train_encoder
    from zjulab.skillrouter.mining import mine_hard_negatives

    t0 = time.perf_counter()
    skills, pairs = _training_data(args)
    profile = args.profile or ("embedded" if args.model == "embedded" else "skillrouter")
    if args.model == "embedded":
        from zjulab.common.defaults import default_encoder_path

        args.model = str(default_encoder_path())
    enc = SentenceTransformerEncoder(args.model, device=args.device)
    max_len = args.max_seq_length or (DEMO_ENCODER["max_seq_length"] if args.demo else None)
    if max_len:
        enc.model.max_seq_length = int(max_len)
    batch = args.batch_size or (DEMO_ENCODER["batch_size"] if args.demo else 16)
    mining = DEMO_ENCODER["mining"] if args.demo else MiningConfig()
    cfg = TrainEncoderConfig(
        output_dir=args.out,
        profile=profile,
        max_steps=args.max_steps,
        batch_size=batch,
        epochs=args.epochs,
        lora=args.lora,
        overwrite=args.overwrite,
    )
    # mining sees the texts and query prompt the trained encoder will be routed with
    examples = mine_hard_negatives(
        pairs,
        skills,
        enc,
        mining,  # type: ignore[arg-type]
        desc_max=int(cfg.desc_max or 0),
        body_max=int(cfg.body_max or 0),
        query_prompt=str(cfg.query_prompt),
    )
    excluded = sum(e.excluded_relevant for e in examples)
    print(
        f"mined {len(examples)} examples ({profile} profile); {excluded} graded-relevant skills kept "
        "out of the negatives",
        flush=True,
    )
    res = train_encoder(enc.model, examples, cfg, device=args.device)
    print(
        f"{len(examples)} examples, {res.steps} steps, mean loss {res.train_loss:.4f} -> {res.output_dir} "
        f"({time.perf_counter() - t0:.0f}s)"
    )
    return 0


def _cmd_train_reranker(args: argparse.Namespace) -> int:
    from zjulab.skillrouter.mining import mine_hard_negatives
    from zjulab.skillrouter.models import embedded_encoder, load_skill_encoder
    from zjulab.skillrouter.reranker_training import train_reranker

    skills, pairs = _training_data(args)
    enc: Any = (
        embedded_encoder(device=args.device)
        if args.mining_encoder == "embedded"
        else load_skill_encoder(args.mining_encoder, device=args.device)
    )
    examples = mine_hard_negatives(pairs, skills, enc, MiningConfig())
    cfg = TrainRerankerConfig(
        output_dir=args.out,
        profile=args.profile or ("embedded" if args.model == "embedded" else "skillrouter"),
        loss=args.loss,
        kind=args.kind,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lora=args.lora,
        group_size=args.group_size,
        overwrite=args.overwrite,
    )
    if args.model == "embedded":
        from zjulab.common.defaults import default_chat_model_path

        args.model = str(default_chat_model_path())
    res = train_reranker(args.model, examples, cfg, device=args.device)
    print(f"{len(examples)} groups, {res.steps} steps, mean loss {res.train_loss:.4f} -> {res.output_dir}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from zjulab.skillrouter.serve import serve

    router = SkillRouter.load(args.index, device=args.device)
    if args.transport == "http":
        print(
            f"serving {len(router)} skills on http://{args.host}:{args.port} "
            "(POST /route, GET /health, MCP at /mcp)",
            file=sys.stderr,
            flush=True,
        )
    serve(router, transport=args.transport, host=args.host, port=args.port)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from zjulab.skillrouter.demo_pool import load_demo_pool

    t0 = time.perf_counter()
    pool = load_demo_pool()
    print(
        f"demo pool: {len(pool.skills)} skills in 40 groups of near-identical names/descriptions; "
        f"{len(pool.test)} held-out tasks"
    )
    base = RouterConfig(rerank_k=args.rerank_k, retrieve_k=50)
    two_stage = SkillRouter.embedded(base, device=args.device).index(pool.skills)
    bm25 = SkillRouter(None, None, RouterConfig(profile="embedded", retriever="bm25", rerank=False)).index(
        pool.skills
    )
    print(f"indexed with MiniLM-L6 + faiss (exact) and BM25 in {time.perf_counter() - t0:.1f}s")
    for q in DEMO_TASKS:
        _print_routes(q, two_stage.route(q, k=3))
    first = [
        evaluate(bm25, pool.test, name="BM25"),
        evaluate(two_stage, pool.test, rerank=False, name="dense (MiniLM)"),
    ]
    print(f"\nall {len(pool.test)} held-out tasks, first stage only:")
    print(format_table(first, ("Hit@1", "nDCG@10", "Recall@10")))
    sub = pool.test[: args.eval_tasks]
    if sub:
        reports: list[EvalReport] = [
            evaluate(bm25, sub, name="BM25"),
            evaluate(two_stage, sub, rerank=False, name="dense (MiniLM)"),
            evaluate(two_stage, sub, name=f"two-stage (+SmolLM2 top-{args.rerank_k})"),
        ]
        print(f"\nfirst {len(sub)} held-out tasks, with the reranker (a 135M model on CPU is slow):")
        print(format_table(reports, ("Hit@1", "nDCG@10", "Recall@10")))
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0


def _add_router_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedded", action="store_true", help="use the embedded offline models")
    p.add_argument(
        "--encoder", default=None, help="encoder hub id or path (default: the SkillRouter encoder)"
    )
    p.add_argument(
        "--reranker", default=None, help="reranker hub id or path (default: the SkillRouter reranker)"
    )
    p.add_argument(
        "--profile",
        choices=["skillrouter", "qwen3", "embedded"],
        default="skillrouter",
        help="what the models are fed (prompts, budgets, token limits); --embedded implies 'embedded'",
    )
    p.add_argument(
        "--max-length", type=int, default=None, help="token limit of both models (default: the profile's)"
    )
    p.add_argument("--retriever", choices=["dense", "bm25", "hybrid"], default="dense")
    p.add_argument("--fields", choices=["full", "name_description"], default="full")
    p.add_argument("--index-type", choices=["flat", "hnsw", "ivf"], default="flat")
    p.add_argument("--retrieve-k", type=int, default=50)
    p.add_argument("--rerank-k", type=int, default=20)
    p.add_argument("--no-rerank", action="store_true", help="first stage only")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--demo", action="store_true", help="use the packaged demo pool")
    p.add_argument("--pool", default=None, help="skills: SKILL.md folder, JSONL file or folder of shards")
    p.add_argument("--tasks", default=None, help="tasks.jsonl in the SkillRouter format")
    p.add_argument("--relevance", default=None, help="relevance.json (default: beside the tasks)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zjulab-skillrouter``."""
    parser = argparse.ArgumentParser(
        prog="zjulab-skillrouter", description="Two-stage skill routing (SkillRouter)."
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a folder of SKILL.md files (or a JSONL pool)")
    p.add_argument("source")
    p.add_argument("--out", required=True, help="a new or empty folder (or an index, with --overwrite)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the index in --out (never a folder that is not one)"
    )
    p.add_argument(
        "--update", action="store_true", help="re-encode only new or changed skills of the index in --out"
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable SKILL.md files and list them (default: stop)"
    )
    _add_router_args(p)
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("route", help="route a task with a saved index")
    p.add_argument("index")
    p.add_argument("task")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--no-rerank", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    p.add_argument("--where", default=None, help='metadata filter as JSON, e.g. \'{"category": "pdf"}\'')
    p.set_defaults(func=_cmd_route)

    p = sub.add_parser("eval", help="evaluate on tasks + relevance (SkillRouter format) or the demo pool")
    p.add_argument("index", nargs="?", default=None)
    _add_data_args(p)
    _add_router_args(p)
    p.add_argument("--mode", choices=["core", "all", "single"], default="core")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--name", default="router")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    p.set_defaults(func=_cmd_eval)

    for name, func in (("train-encoder", _cmd_train_encoder), ("train-reranker", _cmd_train_reranker)):
        p = sub.add_parser(name, help=f"{name.replace('-', ' ')} with mined hard negatives")
        p.add_argument("--model", required=True, help="starting checkpoint: hub id, path, or 'embedded'")
        p.add_argument("--out", required=True)
        _add_data_args(p)
        p.add_argument("--max-steps", type=int, default=-1)
        p.add_argument("--epochs", type=float, default=1.0)
        p.add_argument(
            "--batch-size",
            type=int,
            default=None if name == "train-encoder" else 2,
            help="queries per step (train-encoder: 16, or 4 with --demo)",
        )
        if name == "train-encoder":
            p.add_argument(
                "--max-seq-length",
                type=int,
                default=None,
                help="token limit (default: the model's; 32 with --demo)",
            )
        p.add_argument("--lora", action="store_true")
        p.add_argument(
            "--overwrite", action="store_true", help="replace a model an earlier run wrote to --out"
        )
        if name == "train-reranker":
            p.add_argument("--loss", choices=["listwise", "pointwise"], default="listwise")
            p.add_argument("--kind", choices=["yes_no", "cross_encoder"], default="yes_no")
            p.add_argument("--group-size", type=int, default=8)
            p.add_argument("--mining-encoder", default="embedded", help="'embedded' or an encoder id/path")
        p.add_argument(
            "--profile",
            choices=["skillrouter", "qwen3", "embedded"],
            default=None,
            help="prompts and budgets to train with, the ones routing will use "
            "(default: 'embedded' for --model embedded, else 'skillrouter')",
        )
        p.set_defaults(func=func)

    p = sub.add_parser("serve", help="load an index once; serve POST /route and an MCP route_skills tool")
    p.add_argument("index")
    p.add_argument(
        "--transport", choices=["http", "stdio"], default="http", help="stdio: MCP for a spawning agent"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="route on the demo pool with the embedded models (offline)")
    p.add_argument("--rerank-k", type=int, default=3)
    p.add_argument(
        "--eval-tasks", type=int, default=4, help="held-out tasks scored with the reranker (0: none)"
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zjulab-skillrouter``."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, prog="zjulab-skillrouter")


if __name__ == "__main__":
    sys.exit(main())
