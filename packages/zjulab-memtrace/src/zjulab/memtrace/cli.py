"""Command line: ``zjulab-memtrace demo | show | attribute | bench`` (also installed as ``memtrace``)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from zjulab.common.cli import run_command
from zjulab.common.errors import ZjulabError
from zjulab.common.io import write_json

__all__ = ["main"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    """Text that may hold strings from a trace file: redacted, without control sequences."""
    from zjulab.memtrace.redaction import DEFAULT_REDACTOR

    return _CONTROL.sub("?", DEFAULT_REDACTOR.text(text))


def _say(*parts: object) -> None:
    """Print text that may hold strings from a trace file: redacted, without control sequences."""
    print(_clean(" ".join(str(p) for p in parts)))


class _RedactingFilter(logging.Filter):
    """Log lines leave the process redacted and without control sequences, like printed ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _clean(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.msg += "\n" + _clean("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
            record.exc_text = None
        return True


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a sub-command so that every message it prints, errors and logs included, is cleaned."""

    def run(args: argparse.Namespace) -> int:
        flt = _RedactingFilter()
        handlers = list(logging.getLogger().handlers)
        for h in handlers:
            h.addFilter(flt)
        try:
            return fn(args)
        except ZjulabError as exc:
            print(f"zjulab-memtrace: error: {_clean(str(exc))}", file=sys.stderr)
            return 2
        except OSError as exc:  # an output that cannot be written (permissions, a full disk)
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"zjulab-memtrace: error: {_clean(where + (exc.strerror or str(exc)))}", file=sys.stderr)
            return 2
        finally:
            for h in handlers:
                h.removeFilter(flt)

    return run


def _cmd_demo(args: argparse.Namespace) -> int:
    from zjulab.memtrace.demo import DEMO_GOLD, run_demo

    t0 = time.perf_counter()
    res = run_demo(args.out, judge=args.judge, encoder=args.encoder, device=args.device)
    att = res.attribution
    _say(f"Mem0-style pipeline (encoder: {res.encoder_id}) with a planted fault: extraction drops a fact")
    _say(f"question : {DEMO_GOLD.question}")
    _say(f"gold     : {DEMO_GOLD.answer}")
    _say(f"answer   : {res.answer}")
    _say(f"judge    : {att.method}; rounds: {att.rounds}")
    for r in att.replays:
        _say(f"replay   : correct {r.op_ids} -> re-ran {r.executed} -> {r.answer!r} (rescued: {r.rescued})")
    _say(att.summary())
    for d in att.decisive:
        _say(f"decisive error: {d.label} [{d.op_id}] mode={d.mode}: {d.rationale}")
    _say(f"trace    : {res.trace_path}")
    for p in res.pictures:
        _say(f"picture  : {p}")
    _say(f"({time.perf_counter() - t0:.1f} s)")
    return 0


def _load_attribution(path: Path, *, required: bool) -> object | None:
    from zjulab.memtrace.attribution import Attribution
    from zjulab.memtrace.outputs import written_here

    if not required and not (path.is_file() and written_here(path)):
        return None  # the default name beside the trace, when it is absent or a user's own file
    from zjulab.memtrace.store import read_untrusted_json

    return Attribution.from_dict(read_untrusted_json(path), source=str(path))


def _cmd_show(args: argparse.Namespace) -> int:
    from zjulab.memtrace.redaction import DEFAULT_REDACTOR
    from zjulab.memtrace.render import write_picture
    from zjulab.memtrace.store import load_trace

    trace_path = Path(args.trace)
    trace = load_trace(trace_path)
    att_path = Path(args.attribution) if args.attribution else trace_path.with_suffix(".attribution.json")
    att = _load_attribution(att_path, required=bool(args.attribution))
    out = Path(args.out) if args.out else trace_path.with_suffix("")
    paths = write_picture(
        trace, out, att, redact=None if args.no_redact else DEFAULT_REDACTOR, formats=args.format
    )  # type: ignore[arg-type]
    for p in paths:
        _say(p)
    return 0


def _cmd_attribute(args: argparse.Namespace) -> int:
    from zjulab.memtrace.attribution import attribute
    from zjulab.memtrace.config import AttributionConfig
    from zjulab.memtrace.gold import Gold
    from zjulab.memtrace.judges import ChatJudge, EvidenceJudge, Judge
    from zjulab.memtrace.outputs import check_replaceable, utf8_safe
    from zjulab.memtrace.store import load_trace

    if args.trust_handles and not args.allow_module:
        from zjulab.common.errors import ConfigError

        raise ConfigError("--trust-handles needs at least one --allow-module MODULE")
    trace = load_trace(
        args.trace, trust_handles=args.trust_handles, allow_modules=tuple(args.allow_module or ())
    )
    if not trace.handles and not args.no_verify:
        _say("no handles re-bound (pass --trust-handles --allow-module MODULE to replay); not verifying")
    gold = Gold(args.gold, tuple(args.evidence or ()), args.question or trace.metadata.get("question"))
    judge: Judge
    if args.judge == "chat":
        from zjulab.common.defaults import default_chat_model

        judge = ChatJudge(default_chat_model(device=args.device))
    else:
        judge = EvidenceJudge()
    verify = not args.no_verify and bool(trace.handles)
    att = attribute(trace, gold, judge, config=AttributionConfig(verify=verify))
    out = Path(args.out) if args.out else Path(args.trace).with_suffix(".attribution.json")
    check_replaceable(out)
    write_json(out, utf8_safe(att.to_dict()))
    _say(att.summary())
    for d in att.decisive:
        _say(f"{d.label} [{d.op_id}] mode={d.mode}: {d.rationale}")
    _say(f"attribution: {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from zjulab.common.testing import HashingEncoder
    from zjulab.memtrace.bench import build_memtracebench, chat_methods, default_methods, evaluate, stratified
    from zjulab.memtrace.config import BenchConfig
    from zjulab.memtrace.locomo import find_locomo

    path = find_locomo(args.locomo)
    t0 = time.perf_counter()
    cases = build_memtracebench(
        path, HashingEncoder(512), BenchConfig(max_questions=20 if args.quick else 60)
    )
    t1 = time.perf_counter()
    report = evaluate(cases, default_methods())
    t2 = time.perf_counter()
    _say(f"cases: {report.counts} (built in {t1 - t0:.1f} s, scored in {t2 - t1:.1f} s)")
    _say(report.table())
    if args.chat_limit > 0:
        from zjulab.common.defaults import default_chat_model

        sub = stratified(cases, args.chat_limit)
        model = default_chat_model(device=args.device)
        methods = {
            **chat_methods(model),
            **{k: v for k, v in default_methods().items() if "oracle" in k or "last" in k},
        }
        t3 = time.perf_counter()
        chat_report = evaluate(sub, methods)
        _say(
            f"\nembedded chat model ({model.model_id}) on {len(sub)} stratified faulted cases ({time.perf_counter() - t3:.0f} s):"
        )
        _say(chat_report.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="zjulab-memtrace", description="Trace memory pipelines and attribute failures (MemTrace)."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="trace a faulty Mem0-style pipeline, attribute and draw it")
    d.add_argument("--out", default="memtrace-demo", help="output folder")
    d.add_argument("--judge", choices=["evidence", "chat"], default="evidence")
    d.add_argument("--encoder", choices=["embedded", "hashing"], default="embedded")
    d.add_argument("--device", default="cpu")
    d.set_defaults(fn=_cmd_demo)

    s = sub.add_parser("show", help="draw a saved trace as HTML and DOT")
    s.add_argument("trace")
    s.add_argument("--attribution", help="attribution JSON (default: TRACE.attribution.json if present)")
    s.add_argument("--out", help="output path without suffix (default: next to the trace)")
    s.add_argument("--format", nargs="+", choices=["html", "dot"], default=["html", "dot"])
    s.add_argument("--redact", action="store_true", help="redact secrets and personal data (the default)")
    s.add_argument("--no-redact", action="store_true", help="draw values as they are, secrets included")
    s.set_defaults(fn=_cmd_show)

    a = sub.add_parser("attribute", help="attribute a saved trace's wrong answer")
    a.add_argument("trace")
    a.add_argument("--gold", required=True, help="gold answer")
    a.add_argument("--evidence", nargs="*", help="evidence texts as the pipeline stores them")
    a.add_argument("--question")
    a.add_argument("--judge", choices=["evidence", "chat"], default="evidence")
    a.add_argument("--no-verify", action="store_true", help="skip replay verification")
    a.add_argument(
        "--trust-handles",
        action="store_true",
        help="re-bind the file's handle_ref names for replay (off: a trace file never imports or calls code)",
    )
    a.add_argument(
        "--allow-module",
        action="append",
        metavar="MODULE",
        help="with --trust-handles: a module (and its submodules) whose registered operations may be re-bound",
    )
    a.add_argument("--out", help="attribution JSON (default: TRACE.attribution.json)")
    a.add_argument("--device", default="cpu")
    a.set_defaults(fn=_cmd_attribute)

    b = sub.add_parser("bench", help="run the reduced MemTraceBench")
    b.add_argument("--locomo", help="path of locomo10.json (default: shared/data/locomo)")
    b.add_argument("--quick", action="store_true", help="20 questions instead of 60")
    b.add_argument("--chat-limit", type=int, default=0, help="also score the embedded chat judge on N cases")
    b.add_argument("--device", default="cpu")
    b.set_defaults(fn=_cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    return run_command(_guarded(args.fn), args, prog="zjulab-memtrace")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
