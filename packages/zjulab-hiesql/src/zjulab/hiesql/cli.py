"""Command line: ``zjulab-hiesql {eval,train,pretrain,predict,chat,demo}``."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zjulab.common.cli import run_command
from zjulab.common.errors import ModelNotAvailableError
from zjulab.hiesql.llm_parser import DEFAULT_MAX_NEW_TOKENS

__all__ = ["main"]


def _print_turn(k: int, turn: Any, max_rows: int = 10) -> None:
    print(f"\n[turn {k}] {turn.utterance}")
    graph = turn.prediction.graph
    if graph is not None:
        linked = graph.linked_schema()
        print("  linked schema:")
        if not linked:
            print("    (nothing linked)")
        for item, how in linked.items():
            print(f"    {item:22} {', '.join(how[:3])}")
    print(f"  SQL: {turn.sql}" + ("" if turn.prediction.valid else "   [no valid candidate]"))
    for bad, why in turn.prediction.rejected[:3]:
        print(f"    rejected: {bad[:80]!r} ({why[:110]})")
    if turn.result is not None:
        print(
            f"  rows ({len(turn.result.rows)}{'+' if turn.result.truncated else ''}): {', '.join(turn.result.columns)}"
        )
        for row in turn.result.rows[:max_rows]:
            print("    " + " | ".join(str(v) for v in row))
    elif turn.error:
        print(f"  failed: {turn.error[:300]}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from zjulab.hiesql.config import SandboxConfig
    from zjulab.hiesql.evaluation import EVAL_SANDBOX, evaluate_files

    cfg = SandboxConfig(
        **{
            **EVAL_SANDBOX.__dict__,
            "timeout_s": args.timeout,
            "isolation": "process" if args.isolate else "in_process",
        }
    )
    t0 = time.perf_counter()
    report = evaluate_files(
        args.gold,
        args.pred,
        args.tables,
        args.db,
        sandbox_config=cfg,
        value_placeholder=args.value_placeholder,
    )
    print(report.format_table())
    for t in report.turns:
        if t.exec_error:
            print(
                f"  execution error, interaction {t.interaction} turn {t.turn} ({t.db_id}): {t.exec_error[:200]}"
            )
    print(f"\n(evaluated in {time.perf_counter() - t0:.2f}s)")
    if args.json:
        from zjulab.common.io import write_json

        write_json(args.json, report.to_dict())
    if not report.complete and not args.allow_missing:
        print(
            f"error: {report.missing_turns} gold turns have no prediction (scored wrong above); "
            "pass --allow-missing to accept an incomplete prediction file"
        )
        return 1
    return 0


def _parser_config(args: argparse.Namespace) -> Any:
    from zjulab.hiesql.config import DecoderConfig, EncoderConfig, ParserConfig

    return ParserConfig(
        encoder=EncoderConfig(model_name_or_path=args.encoder, context=args.context),
        decoder=DecoderConfig(model_name_or_path=args.decoder, lora=not args.no_lora),
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_steps=args.steps,
        lr=args.lr,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from zjulab.hiesql.data import load_interactions
    from zjulab.hiesql.parser import HieSqlParser
    from zjulab.hiesql.schema import load_tables

    inters = load_interactions(args.data)
    schemas = load_tables(args.tables)
    parser = HieSqlParser.from_pretrained(_parser_config(args), device=args.device)
    losses = parser.train(inters, schemas)
    parser.save(args.out)
    print(f"trained {len(losses)} steps; loss {losses[0]:.3f} -> {losses[-1]:.3f}; saved to {args.out}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from transformers import AutoModelForMaskedLM

    from zjulab.common.loading import load_tokenizer
    from zjulab.hiesql.config import PretrainConfig
    from zjulab.hiesql.data import load_interactions
    from zjulab.hiesql.pretraining import BimodalPretrainer, paired_texts

    pairs = paired_texts(load_interactions(args.data), "history")
    try:
        model = AutoModelForMaskedLM.from_pretrained(args.model)
    except OSError as exc:
        raise ModelNotAvailableError(f"cannot load masked-LM {args.model!r}: {exc}") from exc
    tok = load_tokenizer(args.model)
    trainer = BimodalPretrainer(
        model, tok, PretrainConfig(steps=args.steps, batch_size=args.batch_size), device=args.device
    )
    losses = trainer.train(pairs)
    trainer.save(args.out)
    print(
        f"pretrained {len(losses)} steps on {len(pairs)} pairs; loss {losses[0]:.3f} -> {losses[-1]:.3f}; saved to {args.out}"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from zjulab.hiesql.data import load_interactions, write_turn_file
    from zjulab.hiesql.parser import HieSqlParser
    from zjulab.hiesql.schema import load_tables

    for out in (args.out, args.gold_out):
        if out and Path(out).exists() and not args.overwrite:
            from zjulab.hiesql.errors import HieSqlConfigError

            raise HieSqlConfigError(f"{out} exists; pass --overwrite to replace it")
    inters = load_interactions(args.data)
    schemas = load_tables(args.tables)
    parser = HieSqlParser.load(args.model, device=args.device)
    preds = parser.predict(inters, schemas)
    write_turn_file(args.out, [[(sql, inter.db_id) for sql in p] for p, inter in zip(preds, inters)])
    if args.gold_out:  # CoSQL's dev.json and dev_gold.txt list dialogues in different orders
        write_turn_file(args.gold_out, [[(t.sql, i.db_id) for t in i.turns] for i in inters])
    print(f"wrote {sum(len(p) for p in preds)} predictions for {len(preds)} interactions to {args.out}")
    return 0


def _llm_parser(args: argparse.Namespace, examples: Any = None) -> Any:
    from zjulab.hiesql.llm_parser import LLMParser

    if getattr(args, "base_url", None):
        from zjulab.common.chat import OpenAIChatModel

        chat: Any = OpenAIChatModel(
            args.llm, base_url=args.base_url, timeout=args.timeout, max_retries=args.retries
        )
    else:
        from zjulab.common.defaults import default_chat_model

        chat = default_chat_model(device=args.device, max_new_tokens=args.max_new_tokens)
    return LLMParser(
        chat,
        num_candidates=args.candidates,
        max_new_tokens=args.max_new_tokens,
        examples=examples,
        schema_budget=args.schema_budget,
    )


def _cmd_chat(args: argparse.Namespace) -> int:
    from zjulab.hiesql.session import Text2SQLSession

    if args.model:
        from zjulab.hiesql.parser import HieSqlParser

        parser: Any = HieSqlParser.load(args.model, device=args.device)
    else:
        parser = _llm_parser(args)
    from zjulab.hiesql.config import SandboxConfig

    cfg = SandboxConfig(timeout_s=args.sql_timeout, isolation="process" if args.isolate else "in_process")
    session = Text2SQLSession(parser, args.db, sandbox_config=cfg)
    print(f"database {args.db}: tables {', '.join(session.schema.table_names_original)}")
    print("ask questions; ':reset' starts a new interaction, ':quit' (or an empty line) leaves")
    k = 0
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line or line == ":quit":
            break
        if line == ":reset":
            session.reset()
            k = 0
            continue
        k += 1
        _print_turn(k, session.ask(line))
    session.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from zjulab.hiesql.demo_db import DEMO_EXAMPLES, DEMO_QUESTIONS, build_demo_database
    from zjulab.hiesql.session import Text2SQLSession

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db = build_demo_database(Path(tmp) / "bookshop.sqlite")
        parser = _llm_parser(args, examples={"bookshop": DEMO_EXAMPLES})
        session = Text2SQLSession(parser, db)
        print("HIE-SQL demo: a three-turn interaction over the bundled bookshop database")
        print("model: embedded SmolLM2-135M-Instruct through the LLM path (history + last SQL in the prompt)")
        print(
            "tables: "
            + "; ".join(
                f"{t}({', '.join(session.schema.column_names_original[c][1] for c in session.schema.columns_of(i))})"
                for i, t in enumerate(session.schema.table_names_original)
            )
        )
        for k, q in enumerate(DEMO_QUESTIONS, start=1):
            _print_turn(k, session.ask(q))
        session.close()
    print(f"\n(done in {time.perf_counter() - t0:.1f}s)")
    return 0


def _build() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zjulab-hiesql", description="Context-dependent text-to-SQL (HIE-SQL).")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser(
        "eval", help="exact-set-match QM/IM of a prediction file (official SParC/CoSQL scoring)"
    )
    e.add_argument("gold")
    e.add_argument("pred")
    e.add_argument("--tables", required=True, help="tables.json")
    e.add_argument("--db", default=None, help="directory with DB/DB.sqlite for execution accuracy")
    e.add_argument("--json", default=None, help="also write the summary as JSON here")
    e.add_argument(
        "--allow-missing",
        action="store_true",
        help="exit 0 even when gold turns have no prediction (they are scored wrong either way)",
    )
    e.add_argument("--timeout", type=float, default=30.0, help="seconds per query for execution accuracy")
    e.add_argument("--isolate", action="store_true", help="run queries in a worker process under rlimits")
    e.add_argument(
        "--value-placeholder",
        choices=["official", "token"],
        default="official",
        help="'official': replace the text 'value' everywhere as the official script does; "
        "'token': only the bare placeholder word",
    )
    e.set_defaults(func=_cmd_eval)

    for name, func, hlp in (("train", _cmd_train, "train a HieSqlParser"),):
        t = sub.add_parser(name, help=hlp)
        t.add_argument("--data", required=True, help="interactions (SParC/CoSQL JSON)")
        t.add_argument("--tables", required=True)
        t.add_argument("--out", required=True)
        t.add_argument("--encoder", default="microsoft/codebert-base")
        t.add_argument("--decoder", default="Qwen/Qwen2.5-Coder-0.5B")
        t.add_argument("--context", choices=["utterance", "history", "history_sql"], default="history_sql")
        t.add_argument("--epochs", type=int, default=3)
        t.add_argument("--steps", type=int, default=0, help="stop after this many steps (0 = epochs)")
        t.add_argument("--batch-size", type=int, default=8)
        t.add_argument("--lr", type=float, default=1e-4)
        t.add_argument("--no-lora", action="store_true")
        t.add_argument("--device", default="auto")
        t.set_defaults(func=func)

    p = sub.add_parser("pretrain", help="bimodal NL-SQL masked-LM pretraining of an encoder")
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="microsoft/codebert-base")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_pretrain)

    pr = sub.add_parser("predict", help="predict SQL for interactions with a saved parser")
    pr.add_argument("--model", required=True)
    pr.add_argument("--data", required=True)
    pr.add_argument("--tables", required=True)
    pr.add_argument("--out", required=True)
    pr.add_argument("--gold-out", default=None, help="also write the gold SQL in the same interaction order")
    pr.add_argument("--overwrite", action="store_true", help="replace existing --out/--gold-out files")
    pr.add_argument("--device", default="auto")
    pr.set_defaults(func=_cmd_predict)

    for name, func, hlp in (
        ("chat", _cmd_chat, "interactive questions over a SQLite file (sandboxed)"),
        ("demo", _cmd_demo, "three-turn demo on the bundled database with the embedded chat model"),
    ):
        c = sub.add_parser(name, help=hlp)
        if name == "chat":
            c.add_argument("db", help="SQLite database file")
            c.add_argument("--model", default=None, help="a saved HieSqlParser (default: the LLM path)")
            c.add_argument(
                "--sql-timeout", type=float, default=2.0, help="seconds a query may run in the sandbox"
            )
            c.add_argument(
                "--isolate",
                action="store_true",
                help="run queries in a worker process under CPU/memory rlimits",
            )
        c.add_argument("--llm", default="default", help="model name on --base-url")
        c.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for the LLM path")
        c.add_argument(
            "--candidates",
            type=int,
            default=1 if name == "demo" else 2,
            help="LLM candidates for validity re-ranking (greedy first, then samples)",
        )
        c.add_argument(
            "--max-new-tokens",
            type=int,
            default=DEFAULT_MAX_NEW_TOKENS,
            help="longest answer the LLM may write (the default fits 99.7%% of SParC/CoSQL gold SQL)",
        )
        c.add_argument(
            "--timeout", type=float, default=30.0, help="seconds one request to --base-url may take"
        )
        c.add_argument("--retries", type=int, default=2, help="retries of a failed request to --base-url")
        c.add_argument("--schema-budget", type=int, default=None, help="most tokens of schema in the prompt")
        c.add_argument("--device", default="cpu")
        c.set_defaults(func=func)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zjulab-hiesql``."""
    args = _build().parse_args(argv)
    return run_command(args.func, args, prog="zjulab-hiesql")


if __name__ == "__main__":
    raise SystemExit(main())
