"""Command line: ``zjulab-crs demo | train TASK | eval TASK | synth DIR | validate PATH``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zjulab.common.cli import run_command

__all__ = ["main"]

logger = logging.getLogger(__name__)

#: RUBER's encoder on U-NEED data (Chinese): a Chinese BERT, as the task models default to.
RUBER_ZH_ENCODER = "bert-base-chinese"
TASK_NAMES = ("understanding", "elicitation", "recommendation", "generation", "evaluation")


def _corpus(data: str) -> Any:
    from zjulab.crs.loaders import load_uneed_dir
    from zjulab.crs.synthetic import synthetic_corpus

    return synthetic_corpus() if data == "synthetic" else load_uneed_dir(data)


def _cmd_demo(args: argparse.Namespace) -> int:
    from zjulab.crs.suite import (
        SuiteConfig,
        category_table,
        embedded_factories,
        five_task_table,
        run_suite,
        tiny_factories,
    )
    from zjulab.crs.synthetic import synthetic_corpus

    start = time.perf_counter()
    corpus = synthetic_corpus()
    n = {k: len(v) for k, v in corpus.dialogues.items()}
    print(f"synthetic corpus: {n} dialogues, {len(corpus.items)} items, {len(corpus.behaviours)} behaviours")
    if args.embedded:
        enc_f, lm_f = embedded_factories(args.device)
        cfg = SuiteConfig(
            tasks=tuple(args.tasks), steps=args.steps or 20, device=args.device, max_eval=48, seed=args.seed
        )
        print(
            "models: embedded MiniLM-L6 encoder (English-only: for U-NEED's Chinese use bert-base-chinese, "
            "the task configs' default) and SmolLM2-135M (LoRA)"
        )
    else:
        enc_f, lm_f = tiny_factories()
        cfg = SuiteConfig.tiny(
            tasks=tuple(args.tasks), steps=args.steps or 40, device=args.device, seed=args.seed
        )
        print(
            "models: tiny random-initialised encoder and causal LM (zjulab.common.testing), trained from scratch"
        )
    chat = None
    if args.llm:
        from zjulab.common.defaults import default_chat_model

        chat = default_chat_model(device=args.device, max_new_tokens=64)
    results = run_suite(corpus, enc_f, lm_f, config=cfg, chat_model=chat)
    from zjulab.common.deps import available

    if "recommendation" in cfg.tasks and not available("hopwise"):
        from zjulab.crs.sequential import SASREC_EXTRA

        print(f"SASRec baseline not run: hopwise is not installed ({SASREC_EXTRA})")
    print()
    print(five_task_table(results))
    if args.by_category:
        for task in cfg.tasks:
            print(f"\n{task} by category")
            print(category_table(results, task))
    from zjulab.crs.suite import verdicts

    lines = verdicts(results)
    print("\nTrained model vs. best baseline (headline metric, synthetic test split):")
    for line in lines:
        print("  " + line)
    if any("NOT" in line for line in lines):
        print(
            "This demo is too small to show training beat every baseline: the trained rows ran only"
            f" {cfg.steps} optimiser steps"
            + ("" if args.embedded else " from random initialisation")
            + ", and the synthetic baselines are strong by construction; pretrained encoders (--embedded) and more --steps are needed to beat them."
        )
    print(
        "Paper rows are U-NEED results, a different data set, shown for orientation only."
        f" Total {time.perf_counter() - start:.1f} s."
    )
    return 0


def _trainer(task: str, args: argparse.Namespace, corpus: Any) -> Any:
    from zjulab.crs import config as C
    from zjulab.crs.elicitation import AttributeClassifier
    from zjulab.crs.generation import ResponseGenerator
    from zjulab.crs.quality import QualityRegressor
    from zjulab.crs.recommendation import BiEncoderRanker
    from zjulab.crs.tagger import SpanTagger

    kw: dict[str, Any] = {
        "max_steps": args.steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    if args.learning_rate:
        kw["learning_rate"] = args.learning_rate
    model = tok = None
    if args.model == "tiny":
        from zjulab.common.testing import tiny_causal_lm, tiny_encoder

        model, tok = (
            tiny_causal_lm(0, hidden_size=64) if task == "generation" else tiny_encoder(0, hidden_size=64)
        )
    elif args.model:
        kw["model_name_or_path"] = args.model
    if task == "understanding":
        return SpanTagger(C.TaggerConfig(**kw), model=model, tokenizer=tok)
    if task == "elicitation":
        return AttributeClassifier(C.ElicitationConfig(**kw), model=model, tokenizer=tok)
    if task == "recommendation":
        return BiEncoderRanker(corpus.items, C.RankerConfig(**kw), model=model, tokenizer=tok)
    if task == "generation":
        return ResponseGenerator(C.GeneratorConfig(**kw), model=model, tokenizer=tok)
    return QualityRegressor(C.QualityConfig(**kw), model=model, tokenizer=tok)


def _cmd_train(args: argparse.Namespace) -> int:
    from zjulab.crs.report import evaluate_by_category, format_table
    from zjulab.crs.samples import build_task_samples, task_examples

    corpus = _corpus(args.data)
    train = task_examples(corpus, "train", args.task)
    trainer = _trainer(args.task, args, corpus)
    hist = trainer.fit(train)
    print(
        f"{args.task}: {hist.steps} steps, loss {hist.mean_loss(True):.4f} -> {hist.mean_loss(False):.4f}, {hist.examples_per_second:.1f} samples/s"
    )
    test = getattr(build_task_samples(corpus, args.split, candidates=args.candidates), args.task)
    if len(test) >= 2:
        by_cat, _ = evaluate_by_category(trainer, args.task, test)
        print(format_table([{"category": c, **m} for c, m in by_cat.items()]))
    if args.out:
        trainer.save(args.out)
        print(f"saved to {args.out}")
    return 0


def _load(task: str, path: str, corpus: Any, device: str) -> Any:
    from zjulab.crs.elicitation import AttributeClassifier
    from zjulab.crs.generation import ResponseGenerator
    from zjulab.crs.quality import QualityRegressor
    from zjulab.crs.recommendation import BiEncoderRanker
    from zjulab.crs.tagger import SpanTagger

    if task == "recommendation":
        return BiEncoderRanker.load(path, corpus.items, device=device)
    cls: Any = {
        "understanding": SpanTagger,
        "elicitation": AttributeClassifier,
        "generation": ResponseGenerator,
        "evaluation": QualityRegressor,
    }[task]
    return cls.load(path, device=device)


def _baseline(
    task: str, corpus: Any, train: Sequence[Any], test: Sequence[Any], args: argparse.Namespace
) -> Any:
    from zjulab.crs.elicitation import FrequencyElicitor
    from zjulab.crs.generation import RetrievalResponder
    from zjulab.crs.quality import Ruber, RuberScorer
    from zjulab.crs.recommendation import AttributeMatchRanker
    from zjulab.crs.tagger import LexiconTagger

    if task == "understanding":
        return LexiconTagger().fit(train)
    if task == "elicitation":
        return FrequencyElicitor().fit(train)
    from zjulab.crs.errors import CrsConfigError

    name = args.baseline
    if name and task != "recommendation":
        raise CrsConfigError(f"--baseline {name} is a recommendation baseline; {task} has one baseline")
    if task == "recommendation":
        if name == "popularity":
            return AttributeMatchRanker.popularity(corpus.items, corpus.behaviours)
        if name == "sasrec":
            from zjulab.crs.config import SASRecConfig
            from zjulab.crs.sequential import SASRecRanker

            ranker = SASRecRanker(
                corpus.items, corpus.behaviours, SASRecConfig(epochs=args.sasrec_epochs, device=args.device)
            )
            ranker.fit(train, exclude=test)  # nothing of a test user from its test time on
            return ranker
        return AttributeMatchRanker(corpus.items, corpus.behaviours)
    if task == "generation":
        return RetrievalResponder().fit(train)
    # the paper's task-5 baseline: RUBER, its unreferenced network trained by negative sampling
    # on the train split's (context, response) pairs (no human score is used); without scored
    # train utterances the pairs come from the train split's assistant responses
    pairs = list(train)
    if len(pairs) < 2:
        from zjulab.crs.samples import EvaluationExample, build_generation

        pairs = [
            EvaluationExample(e.context, e.response, 0.0, e.category, e.sid)
            for e in build_generation(corpus.split("train"), corpus)
        ]
    encoder = _ruber_encoder(args.encoder, args.data, args.device)
    if len(pairs) < 2:
        logger.warning("fewer than 2 train responses: task-5 baseline is the untrained RUBER cosine")
        return RuberScorer(encoder)
    return Ruber(encoder).fit(pairs)


def _ruber_encoder(name: str, data: str, device: str) -> Any:
    """RUBER's frozen encoder: the lexical stand-in on synthetic data, a Chinese BERT on U-NEED."""
    if name == "auto":
        name = "hashing" if data == "synthetic" else RUBER_ZH_ENCODER
    if name == "hashing":
        return None  # RUBER's default: the offline hashing test double (white-space words)
    from zjulab.common.encoders import TransformersEncoder
    from zjulab.common.errors import ModelNotAvailableError

    try:
        # mean pooling of the last hidden states: the usual sentence vector of a BERT without
        # a pooling head of its own; U-NEED turns are short, 128 tokens hold them
        return TransformersEncoder(name, pooling="mean", max_length=128, device=device)
    except ModelNotAvailableError as exc:
        raise ModelNotAvailableError(
            f"RUBER's encoder {name!r} is not available ({exc}); --encoder hashing scores with the "
            "offline lexical stand-in instead"
        ) from exc


def _cmd_eval(args: argparse.Namespace) -> int:
    from zjulab.crs.report import evaluate_by_category, format_table
    from zjulab.crs.samples import build_task_samples, task_examples

    corpus = _corpus(args.data)
    test = task_examples(corpus, args.split, args.task, candidates=args.candidates)
    if args.checkpoint and args.baseline:
        from zjulab.crs.errors import CrsConfigError

        raise CrsConfigError("give --checkpoint or --baseline, not both")
    if args.checkpoint:
        system = _load(args.task, args.checkpoint, corpus, args.device)
    else:
        train = getattr(build_task_samples(corpus, "train"), args.task)
        start = time.perf_counter()
        system = _baseline(args.task, corpus, train, test, args)
        built = time.perf_counter() - start
    by_cat, seconds = evaluate_by_category(system, args.task, test)
    fitted = f", built/trained in {built:.1f} s" if not args.checkpoint else ""
    print(
        f"{args.task} on {args.split} ({len(test)} samples, {type(system).__name__}{fitted}, "
        f"scored in {seconds:.1f} s)"
    )
    print(format_table([{"category": c, **m} for c, m in by_cat.items()]))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from zjulab.crs.loaders import save_uneed_dir
    from zjulab.crs.synthetic import SyntheticConfig, synthetic_corpus

    corpus = synthetic_corpus(SyntheticConfig(seed=args.seed))
    save_uneed_dir(args.out, corpus)
    print(
        f"wrote {sum(len(v) for v in corpus.dialogues.values())} dialogues, {len(corpus.items)} items, {len(corpus.behaviours)} behaviours to {args.out}"
    )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from zjulab.crs.loaders import (
        load_behaviours,
        load_dialogues,
        load_items,
        load_task_samples,
        load_uneed_dir,
    )

    p = Path(args.path)
    if p.is_dir():
        c = load_uneed_dir(p, strict=not args.lenient)
        print(
            f"{p}: dialogues { ({k: len(v) for k, v in c.dialogues.items()}) }, {len(c.items)} items, {len(c.behaviours)} behaviours: OK"
        )
    elif p.name == "item_kg.txt":
        print(f"{p}: {len(load_items(p))} items: OK")
    elif p.name == "user_action.txt":
        print(f"{p}: {len(load_behaviours(p))} behaviours: OK")
    elif "dialogue" in p.name:
        print(f"{p}: {len(load_dialogues(p, strict=not args.lenient))} dialogues: OK")
    else:
        print(f"{p}: {len(load_task_samples(p))} task samples: OK")
    return 0


def _positive(text: str) -> int:
    """An argparse type: an integer >= 1 (the message names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="zjulab-crs", description="User-needs-centric conversational recommendation (U-NEED)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo", help="train every task a few steps on the synthetic set and print the five-task table"
    )
    d.add_argument(
        "--embedded",
        action="store_true",
        help="use the embedded MiniLM (English-only) / SmolLM2 instead of tiny models (minutes on CPU)",
    )
    d.add_argument(
        "--llm",
        action="store_true",
        help="add the LLM variants of tasks 1, 2, 4 with the embedded chat model",
    )
    d.add_argument(
        "--steps", type=int, default=0, help="steps per trained model (default 40 tiny / 20 embedded)"
    )
    d.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES))
    d.add_argument("--by-category", action="store_true", help="also print per-category tables")
    d.add_argument("--device", default="cpu")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=_cmd_demo)

    for name, fn, helptext in (
        ("train", _cmd_train, "train one task's model"),
        ("eval", _cmd_eval, "evaluate a checkpoint or the task's baseline"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("task", choices=TASK_NAMES)
        p.add_argument("--data", default="synthetic", help="'synthetic' or a U-NEED directory")
        p.add_argument("--split", default="test", choices=("train", "valid", "test"))
        p.add_argument(
            "--candidates",
            default="file",
            choices=("file", "category"),
            help="recommendation candidates: the file's list, or every item of the category",
        )
        p.add_argument("--device", default="auto")
        if name == "train":
            p.add_argument("--model", default="", help="hub id / path, or 'tiny' for a random tiny model")
            p.add_argument("--steps", type=int, default=0)
            p.add_argument("--epochs", type=int, default=3)
            p.add_argument("--batch-size", type=int, default=16)
            p.add_argument("--learning-rate", type=float, default=0.0)
            p.add_argument("--out", default="", help="checkpoint directory to write")
        else:
            p.add_argument(
                "--checkpoint", default="", help="directory written by train --out (default: the baseline)"
            )
            p.add_argument(
                "--baseline",
                default="",
                choices=("", "attribute", "popularity", "sasrec"),
                help="recommendation baseline: attribute match (default), popularity, or SASRec "
                "trained on the behaviour log (pip install 'zjulab-crs[sasrec]')",
            )
            p.add_argument("--sasrec-epochs", type=_positive, default=50, help="SASRec's training epochs")
            p.add_argument(
                "--encoder",
                default="auto",
                help="RUBER's frozen encoder (task 5): a hub id or directory, 'hashing' for the offline "
                f"lexical stand-in, or 'auto': hashing on synthetic data, {RUBER_ZH_ENCODER} on U-NEED",
            )
        p.set_defaults(fn=fn)

    s = sub.add_parser("synth", help="write the synthetic corpus in U-NEED's file layout")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_cmd_synth)

    v = sub.add_parser("validate", help="check U-NEED files (a directory or one file)")
    v.add_argument("path")
    v.add_argument("--lenient", action="store_true", help="drop mismatched spans instead of failing")
    v.set_defaults(fn=_cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zjulab-crs``."""
    args = build_parser().parse_args(argv)
    return run_command(args.fn, args, prog="zjulab-crs")


if __name__ == "__main__":
    sys.exit(main())
