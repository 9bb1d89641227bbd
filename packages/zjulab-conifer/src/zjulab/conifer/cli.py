"""Command line: ``zjulab-conifer {run,export,train,check,eval-ifeval,generate-ifeval,demo}``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zjulab.common.cli import run_command
from zjulab.common.deps import require
from zjulab.common.io import read_json, read_jsonl, write_json, write_jsonl
from zjulab.common.protocols import Conversation
from zjulab.conifer.checkers import default_registry
from zjulab.conifer.config import PipelineConfig
from zjulab.conifer.curriculum import build_conversations
from zjulab.conifer.errors import ConiferError, ConiferInputError
from zjulab.conifer.ifeval import evaluate_ifeval, load_ifeval, per_type_table
from zjulab.conifer.pipeline import Pipeline, PipelineResult, load_seeds
from zjulab.conifer.training import check_sft_rows, dpo_pairs

DEMO_SEEDS = [
    "How do I keep a sourdough starter alive while I am away for two weeks?",
    "What should I consider when choosing a first programming language?",
    "Explain why the sky is blue.",
]


def build_model(spec: dict[str, Any], *, device: str = "auto", max_new_tokens: int = 512) -> Any:
    """A chat model from a config spec (``{"kind": "openai" | "transformers" | "embedded", ...}``)."""
    kind = spec.get("kind", "embedded")
    if kind in ("embedded", "transformers"):
        require("torch", "pip install 'zjulab-conifer[torch]'", feature=f"a local model (kind {kind!r})")
        require(
            "transformers", "pip install 'zjulab-conifer[torch]'", feature=f"a local model (kind {kind!r})"
        )
    if kind == "embedded":
        from zjulab.common.defaults import default_chat_model

        return default_chat_model(device=spec.get("device", device), max_new_tokens=max_new_tokens)
    if kind == "transformers":
        from zjulab.common.chat import TransformersChatModel

        opts = {k: v for k, v in spec.items() if k not in ("kind", "model")}
        opts.setdefault("device", device)
        opts.setdefault("max_new_tokens", max_new_tokens)
        return TransformersChatModel(spec["model"], **opts)
    from zjulab.common.chat import OpenAIChatModel

    opts = {k: v for k, v in spec.items() if k not in ("kind", "model")}
    opts.setdefault("max_new_tokens", max_new_tokens)
    return OpenAIChatModel(spec["model"], **opts)


def _stats_table(result: PipelineResult) -> str:
    head = (
        f"{'stage':<20}{'in':>5}{'out':>6}{'filt':>6}{'aside':>7}{'failed':>8}{'cached':>8}{'sec':>8}"
        f"{'calls':>7}{'tok in':>9}{'tok out':>9}"
    )
    lines = [head, "-" * len(head)]
    for s in result.stats:
        u = s.usage
        lines.append(
            f"{s.name:<20}{s.inputs:>5}{s.outputs:>6}{s.filtered:>6}{s.set_aside:>7}{s.failed:>8}{s.resumed:>8}"
            f"{s.seconds:>8.1f}"
            f"{u.get('calls', 0):>7}{u.get('prompt_tokens', 0):>9}{u.get('completion_tokens', 0):>9}"
        )
    return "\n".join(lines)


def _print_conversation(conv: Conversation, width: int = 400) -> None:
    for m in conv:
        text = " ".join(m["content"].split())
        print(f"  [{m['role']}] {text[:width]}{' ...' if len(text) > width else ''}")


EXIT_INCOMPLETE = 3


def run_records(run_dir: str | Path, *, partial: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The last stage's records of a finished run, and its manifest.

    Args:
        run_dir: A pipeline ``out_dir``.
        partial: Accept an unfinished run (failed requests, or stages that never ran): the
            records of the last stage that ran.

    Raises:
        ConiferInputError: Not a run directory, or an unfinished run without ``partial`` (the
            message names the missing stages or the failed requests).
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConiferInputError(f"{run_dir}: not a pipeline run (no manifest.json)")
    manifest = read_json(manifest_path)
    stages = list(manifest.get("stages") or [])
    done = list(manifest.get("stages_done") or [])
    missing = [s for s in stages if s not in done]
    if not partial:
        if missing:
            raise ConiferInputError(
                f"{run_dir}: incomplete run, stage(s) {missing} never finished; run it again, "
                "or pass --partial to export what is there (labelled as partial)"
            )
        if not manifest.get("complete"):
            failed = manifest.get("failed") or {}
            raise ConiferInputError(
                f"{run_dir}: incomplete run, failed requests per stage {failed}; run it again to ask "
                "them, or pass --partial to export what is there (labelled as partial)"
            )
    if not done:
        raise ConiferInputError(f"{run_dir}: no stage finished")
    index = stages.index(done[-1])
    path = run_dir / f"{index + 1:02d}_{done[-1]}.output.jsonl"
    return read_jsonl(path), dict(manifest, missing_stages=missing)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline from a JSON config."""
    cfg = PipelineConfig.load(args.config)
    if not cfg.seeds_path:
        raise ConiferInputError(f"{args.config}: set seeds_path to the seed file")
    strong = build_model(cfg.strong_model, device=args.device, max_new_tokens=cfg.answer_max_new_tokens)
    weak = (
        build_model(cfg.weak_model, device=args.device, max_new_tokens=cfg.answer_max_new_tokens)
        if cfg.weak_model
        else None
    )
    result = Pipeline(strong, weak, cfg).run(load_seeds(cfg.seeds_path), retry_abandoned=args.retry_abandoned)
    print(_stats_table(result))
    print(f"\n{len(result.records)} records, {len(result.set_aside())} set aside; files in {result.out_dir}")
    if not result.complete:
        print(
            f"incomplete: {result.failed} request(s) failed (server errors); run the same command again "
            "to ask only those",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run's records as chat ``messages`` (JSONL or a saved ``datasets`` dataset)."""
    if Path(args.out).exists() and not args.overwrite:
        raise ConiferInputError(f"{args.out} exists; give another --out or pass --overwrite")
    records, manifest = run_records(args.run_dir, partial=args.partial)
    is_partial = not manifest.get("complete") or bool(manifest["missing_stages"])
    if args.kind == "dpo":
        rows: list[dict[str, Any]] = dpo_pairs(records)
    else:
        convs = build_conversations(
            records, args.ordering, include_feedback=not args.no_feedback, seed=args.seed
        )
        rows = [{"messages": c} for c in convs]
        check_sft_rows(rows)
    if args.format == "jsonl":
        n = write_jsonl(args.out, rows)
    else:
        datasets = require("datasets", "pip install 'zjulab-conifer[train]'", feature="export --format hf")
        ds = datasets.Dataset.from_list(rows)
        target = Path(args.out)
        if target.exists():  # --overwrite, and only over a dataset saved by datasets
            if not (target.is_dir() and (target / "dataset_info.json").is_file()):
                raise ConiferInputError(f"{target}: not a saved dataset; refusing to replace it")
            import shutil

            shutil.rmtree(target)
        ds.save_to_disk(str(target))
        n = len(ds)
    if args.push_to_hub:
        from zjulab.conifer.hub import push_to_hub

        folder = args.hub_folder or f"{args.out}.hub"
        push_to_hub(
            rows,
            args.push_to_hub,
            folder,
            kind=args.kind,
            manifest=manifest,
            private=not args.public,
            partial=is_partial,
            dry_run=args.hub_dry_run,
        )
        what = "wrote (dry run, nothing uploaded)" if args.hub_dry_run else "uploaded"
        print(f"{what} the dataset card and data for {args.push_to_hub} from {folder}")
    label = " PARTIAL (from an unfinished run)" if is_partial else ""
    if is_partial:
        write_json(
            f"{args.out}.partial.json",
            {
                "partial": True,
                "missing_stages": manifest["missing_stages"],
                "failed": manifest.get("failed", {}),
            },
        )
    what = "preference pairs" if args.kind == "dpo" else f"conversations ({args.ordering})"
    print(f"wrote {n} {what} to {args.out}{label}")
    left = sum(bool(r.get("process_in_answer")) and r.get("answer") is not None for r in records)
    if args.kind != "dpo" and args.no_feedback and left:
        print(
            f"left out {left} answered records whose answers carry their internal feedback "
            "(format/number variants); export without --no-feedback to keep them"
        )
    return 0


def _rows_for_check(
    path: Path, prompts_path: str | None
) -> list[tuple[str, list[str], list[dict[str, Any]], str]]:
    rows = read_jsonl(path)
    by_prompt = {p.prompt: p for p in load_ifeval(prompts_path)} if prompts_path else {}
    out = []
    if not rows:
        raise ConiferInputError(f"{path}: no rows to check")
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ConiferInputError(f"{path}:{i}: a row must be a JSON object, got {type(row).__name__}")
        response = row.get("response", row.get("answer"))
        prompt = str(row.get("prompt", row.get("instruction", "")))
        if response is None:
            raise ConiferInputError(f"{path}:{i}: no 'response' or 'answer'")
        if not isinstance(response, str):
            raise ConiferInputError(
                f"{path}:{i}: the response must be a string, got {type(response).__name__}"
            )
        if "instruction_id_list" in row:
            if not isinstance(row["instruction_id_list"], list):
                raise ConiferInputError(f"{path}:{i}: instruction_id_list must be a list")
            ids, kws = (
                list(row["instruction_id_list"]),
                list(
                    row["kwargs"] if row.get("kwargs") is not None else [{}] * len(row["instruction_id_list"])
                ),
            )
            if len(kws) != len(ids) or not all(isinstance(k, dict) for k in kws):
                raise ConiferInputError(
                    f"{path}:{i}: kwargs must be a list of {len(ids)} object(s), one per instruction id"
                )
        elif "checks" in row:
            checks = row["checks"]
            if not isinstance(checks, list) or not all(
                isinstance(c, dict) and isinstance(c.get("id"), str) for c in checks
            ):
                raise ConiferInputError(
                    f"{path}:{i}: checks must be a list of {{'id': ..., 'kwargs': {{...}}}}"
                )
            ids, kws = [c["id"] for c in checks], [c.get("kwargs") or {} for c in checks]
        elif prompt in by_prompt:
            ids, kws = (
                list(by_prompt[prompt].instruction_id_list),
                [dict(k) for k in by_prompt[prompt].kwargs],
            )
        else:
            raise ConiferInputError(
                f"{path}:{i}: no instruction_id_list/checks, and the prompt is not in --prompts"
            )
        out.append((str(response), ids, kws, prompt))
    return out


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checkers on a responses file and print a per-type table."""
    reg = default_registry()
    table: dict[str, list[int]] = {}
    rows = _rows_for_check(Path(args.responses), args.prompts)
    for line, (response, ids, kws, prompt) in enumerate(rows, 1):
        for iid, kw in zip(ids, kws):
            try:
                strict = reg.check(iid, response, kw, mode="strict", prompt=prompt)
                loose = reg.check(iid, response, kw, mode="loose", prompt=prompt)
            except ConiferError as exc:
                raise ConiferInputError(f"{args.responses}:{line}: {exc}") from None
            c = table.setdefault(iid, [0, 0, 0])
            c[0] += 1
            c[1] += strict
            c[2] += loose
    print(f"{'instruction type':<48}{'n':>5}{'strict':>8}{'loose':>8}")
    for iid in sorted(table):
        n, s, lo = table[iid]
        print(f"{iid:<48}{n:>5}{s / n:>8.3f}{lo / n:>8.3f}")
    tot = [sum(v[k] for v in table.values()) for k in range(3)]
    if tot[0]:
        print(f"{'all':<48}{tot[0]:>5}{tot[1] / tot[0]:>8.3f}{tot[2] / tot[0]:>8.3f}")
    return 0


def cmd_eval_ifeval(args: argparse.Namespace) -> int:
    """Score IFEval responses (``{"prompt", "response"}`` JSONL) on the prompt file."""
    rows = read_jsonl(args.responses)
    res = evaluate_ifeval(rows, args.prompts)
    for k, v in res.as_dict().items():
        print(f"{k:<22}{v:.4f}" if isinstance(v, float) else f"{k:<22}{v}")
    if args.table:
        print()
        for iid, row in per_type_table(res).items():
            print(f"{iid:<48}{row['count']:>5}{row['strict']:>8.3f}{row['loose']:>8.3f}")
    return 0


def cmd_generate_ifeval(args: argparse.Namespace) -> int:
    """Answer IFEval's prompts with a chat model, then score them (resumable)."""
    from zjulab.conifer.ifeval import generate_ifeval

    if args.embedded:
        spec: dict[str, Any] = {"kind": "embedded"}
    elif not args.model:
        raise ConiferInputError("give --model NAME (with --base-url for a server) or --embedded")
    elif args.base_url:
        spec = {"kind": "openai", "model": args.model, "base_url": args.base_url}
        if args.api_key_env:
            spec["api_key_env"] = args.api_key_env
    else:
        spec = {"kind": "transformers", "model": args.model}
    model = build_model(spec, device=args.device, max_new_tokens=args.max_new_tokens)
    prompts = load_ifeval(args.prompts)
    if args.limit:
        prompts = prompts[: args.limit]
    _rows, scores, complete = generate_ifeval(
        model,
        prompts,
        args.out_dir,
        max_new_tokens=args.max_new_tokens,
        max_in_flight=args.max_in_flight,
        batch_size=args.batch_size,
    )
    for k, v in scores.as_dict().items():
        print(f"{k:<22}{v:.4f}" if isinstance(v, float) else f"{k:<22}{v}")
    print(f"\nresponses in {Path(args.out_dir) / 'responses.jsonl'}")
    if not complete:
        print(
            "incomplete: some prompts got no answer; run the same command again to ask only those",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train with TRL on exported rows (SFT conversations or DPO pairs)."""
    from zjulab.conifer.training import dpo_trainer, sft_trainer

    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()):
        raise ConiferInputError(f"{out}: exists and is not empty; give a new --output-dir")
    rows = read_jsonl(args.data)
    common: dict[str, Any] = {
        "lora": not args.no_lora,
        "max_steps": args.max_steps,
        "max_length": args.max_length,
        "device": args.device,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": args.grad_accum,
        "save_strategy": "no",
    }
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    if args.epochs is not None:
        common["num_train_epochs"] = args.epochs
    if args.kind == "dpo":
        trainer = dpo_trainer(rows, args.model, str(out), **common)
    else:
        trainer = sft_trainer(rows, args.model, str(out), **common)
        report = trainer.conifer_fit_report
        if report is not None and (report.split or report.truncated):
            print(
                f"fitted to {report.max_length} tokens: {report.split} conversation(s) split into "
                f"{report.pieces} rows, {len(report.truncated)} still truncated"
            )
    result = trainer.train()
    trainer.save_model(str(out))
    print(f"trained {result.global_step} step(s), loss {result.training_loss:.4f}; saved to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Whole pipeline on three seeds with the embedded SmolLM2-135M, then one easy-to-hard conversation."""
    from zjulab.common.defaults import default_chat_model

    t0 = time.perf_counter()
    model = default_chat_model(device=args.device, max_new_tokens=args.max_new_tokens)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="conifer-demo-")
    run_demo(model, out_dir, max_new_tokens=args.max_new_tokens)
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0


def run_demo(model: Any, out_dir: str | Path, *, max_new_tokens: int = 96) -> PipelineResult:
    """The demo's run and report: every stage on :data:`DEMO_SEEDS` with ``model`` as strong and weak model."""
    cfg = PipelineConfig(
        out_dir=str(out_dir),
        num_reframes=1,
        num_levels=3,
        min_levels=2,
        weak_level=2,
        max_structured_retries=0,
        max_new_tokens=max_new_tokens,
        verdict_max_new_tokens=24,
        answer_max_new_tokens=32,
        batch_size=16,
        min_categories=2,
        max_categories=3,
        salvage_cut_off=True,
    )
    print(
        f"Conifer demo: 3 seed queries, {_model_id_of(model)} as strong and weak model, output in {out_dir}\n"
    )
    result = Pipeline(model, model, cfg).run(load_seeds(DEMO_SEEDS))
    print(_stats_table(result))
    aside = result.set_aside()
    if aside:
        print(f"\n{len(aside)} item(s) set aside (kept with their reasons in *.setaside.jsonl), e.g.:")
        for row in aside[:3]:
            print(f"  {row['stage']}/{row['key']}: {row['reason'][:150]}")
    salvaged = [r for r in result.records if r.get("salvaged")]
    if salvaged:
        print(
            f"\n{len(salvaged)} of {len(result.records)} record(s) built from answers cut off at the token "
            "limit (marked under 'salvaged')"
        )
    ladders = [c for c in build_conversations(result.records, include_feedback=False) if len(c) > 2]
    if ladders:
        conv = max(ladders, key=len)
        print(f"\nEasy-to-hard conversation ({len(conv) // 2} levels, easiest first):")
        _print_conversation(conv)
    else:
        print("\nNo question reached two answered levels with this model; see the set-aside reasons above.")
    return result


def _model_id_of(model: Any) -> str:
    name = getattr(model, "model_id", None)
    return name if isinstance(name, str) and name else type(model).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zjulab-conifer``."""
    parser = argparse.ArgumentParser(prog="zjulab-conifer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="run the curation pipeline from a JSON config")
    p.add_argument("config")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--retry-abandoned",
        action="store_true",
        help="also ask requests that failed in max_request_failures runs",
    )
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("export", help="export a run as chat conversations")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--ordering", choices=["easy_to_hard", "level", "shuffled"], default="easy_to_hard")
    p.add_argument("--format", choices=["jsonl", "hf"], default="jsonl")
    p.add_argument(
        "--kind", choices=["sft", "dpo"], default="sft", help="SFT conversations or DPO preference pairs"
    )
    p.add_argument("--no-feedback", action="store_true", help="leave out the feedback conversations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--partial", action="store_true", help="export an unfinished run (writes OUT.partial.json beside it)"
    )
    p.set_defaults(fn=cmd_export)

    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="also publish on the Hugging Face Hub")
    p.add_argument("--hub-folder", help="folder for the card and data to upload (default: OUT.hub)")
    p.add_argument("--hub-dry-run", action="store_true", help="write the card and data, upload nothing")
    p.add_argument("--public", action="store_true", help="create the Hub repository as public")

    p = sub.add_parser("train", help="train with TRL on exported rows (SFT or DPO)")
    p.add_argument("--data", required=True, help="JSONL from export (--kind sft or dpo)")
    p.add_argument("--model", required=True, help="hub id or local path of the model to train")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--kind", choices=["sft", "dpo"], default="sft")
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--no-lora", action="store_true", help="train every weight instead of a LoRA adapter")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("generate-ifeval", help="answer IFEval's prompts with a chat model and score them")
    p.add_argument("--prompts", required=True, help="IFEval input_data.jsonl")
    p.add_argument("--out-dir", required=True, help="cache, responses.jsonl and scores.json")
    p.add_argument("--model", help="model name (with --base-url: served; without: local transformers)")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", help="environment variable holding the API key")
    p.add_argument("--embedded", action="store_true", help="the embedded SmolLM2-135M (offline)")
    p.add_argument("--max-new-tokens", type=int, default=1280)
    p.add_argument("--max-in-flight", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=cmd_generate_ifeval)

    p = sub.add_parser("check", help="run the constraint checkers on a responses file")
    p.add_argument(
        "responses", help="JSONL rows with response/answer and instruction_id_list+kwargs or checks"
    )
    p.add_argument("--prompts", help="IFEval input_data.jsonl, to look instructions up by prompt")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("eval-ifeval", help="score IFEval responses")
    p.add_argument("responses", help='JSONL rows {"prompt", "response"}')
    p.add_argument("--prompts", required=True, help="IFEval input_data.jsonl")
    p.add_argument("--table", action="store_true", help="also print per-type accuracy")
    p.set_defaults(fn=cmd_eval_ifeval)

    p = sub.add_parser("demo", help="whole pipeline on three seeds with the embedded model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-new-tokens", type=int, default=96, help="length of the structured answers")
    p.add_argument("--out-dir", default=None)
    p.set_defaults(fn=cmd_demo)

    args = parser.parse_args(argv)
    return run_command(args.fn, args, prog="zjulab-conifer", errors=(ConiferError, ValueError, OSError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
