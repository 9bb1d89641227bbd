"""Command line of zjulab-rtt: ``demo``, ``train-discriminator``, ``train`` and ``eval``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from zjulab.common.cli import run_command, use_color
from zjulab.common.errors import ZjulabError

__all__ = ["main"]

logger = logging.getLogger(__name__)

_DEMO_PROMPTS: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = [
    ("List three fruits you like. Do not use any commas.", [("punctuation:no_comma", {})]),
    (
        "Describe the sea in one sentence and use the word blue.",
        [("keywords:existence", {"keywords": ["blue"]}), ("punctuation:no_comma", {})],
    ),
]


def _load_policy(model: str | None, device: str, tiny: bool) -> tuple[Any, Any, str]:
    from zjulab.common.loading import load_causal_lm, load_tokenizer

    if tiny:
        from zjulab.common.testing import tiny_causal_lm

        m, tok = tiny_causal_lm(0)
        return m, tok, "tiny random Qwen2 (test model)"
    if model is None:
        from zjulab.common.defaults import default_chat_model_path

        path = str(default_chat_model_path())
        name = "SmolLM2-135M-Instruct (embedded)"
    else:
        path, name = model, model
    m = load_causal_lm(path, device=device, dtype="float32")
    tok = load_tokenizer(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return m, tok, name


def _grpo_args(out: str, ns: argparse.Namespace, steps: int) -> Any:
    from trl import GRPOConfig

    from zjulab.common.device import resolve_device

    on_cpu = resolve_device(ns.device).type == "cpu"
    return GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=ns.num_generations * ns.prompts_per_step,
        num_generations=ns.num_generations,
        max_completion_length=ns.max_completion_length,
        max_steps=steps,
        learning_rate=ns.lr,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=on_cpu,
        bf16=not on_cpu,  # TRL defaults to bf16 autocast, which only slows a CPU down
        seed=ns.seed,
        temperature=1.0,
        disable_tqdm=True,
        gradient_checkpointing=False,
    )


def _cmd_demo(ns: argparse.Namespace) -> int:
    from datasets import Dataset

    from zjulab.common.seeding import seed_everything
    from zjulab.rtt import RTTConfig, RTTGRPOTrainer, Rubric, RubricReward, SpanRelevance
    from zjulab.rtt.display import colorize_credit, token_pieces

    t0 = time.perf_counter()
    seed_everything(ns.seed)
    model, tok, name = _load_policy(None, "cpu", ns.tiny)
    print(f"policy: {name}; relevance: spans of the verifiable checkers; λ = {ns.lam}")
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "rubrics": [Rubric.check(c, **kw).to_json() for c, kw in rubrics],
        }
        for p, rubrics in _DEMO_PROMPTS
    ]
    reward = RubricReward(aggregate="rate")
    with tempfile.TemporaryDirectory() as out:
        trainer = RTTGRPOTrainer(
            model,
            reward,
            SpanRelevance(),
            RTTConfig(lam=ns.lam),
            args=_grpo_args(out, ns, ns.steps),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h]
    for h in history:
        print(
            f"step {h.get('step')}: loss {h['loss']:.4f}  reward {h.get('reward', float('nan')):.3f}  "
            f"rubric acc {h.get('rtt/rubric_accuracy', float('nan')):.3f}  "
            f"instruction acc {h.get('rtt/instruction_accuracy', float('nan')):.3f}"
        )
    credit = trainer.last_credit
    if credit is None:
        print("no batch was scored")
        return 1
    spread = (credit.token_advantages.std(dim=1)).nan_to_num(0.0)
    i = int(spread.argmax())
    has_credit = bool(credit.token_advantages[i].abs().max() > 0)
    print(f"\nresponse {i} of the last batch (A_resp = {float(credit.response_advantages[i]):+.3f}):")
    if abs(float(credit.response_advantages[i])) < 1e-6:
        print(
            "  (its whole group got the same reward, so GRPO alone gives it no signal"
            + ("; RTT still does)" if has_credit else ")")
        )
    if not has_credit:
        print(
            "  no token of this batch carries rubric credit (a failure about missing content "
            "blames no token; a met rubric that marks no token credits none)"
        )
    for rubric, s in zip(credit.rubrics[i], credit.scores[i].tolist()):
        print(f"  [{'met' if s > 0 else 'NOT met'}] {rubric.text}")
    pieces = token_pieces(credit.completion_ids[i], tok)
    n = len(pieces)
    color = use_color(sys.stdout)
    legend = "green = credited, red = blamed" if color else "\u00abtoken\u00bb(credit) where it is not ~0"
    print(f"per-token credit λ·A_tok ({legend}):")
    print(colorize_credit(pieces, ns.lam * credit.token_advantages[i, :n], color=color))
    top = sorted(range(n), key=lambda j: -abs(float(credit.token_advantages[i, j])))[:5]
    if has_credit:
        print(
            "largest |A_tok|: "
            + ", ".join(f"{pieces[j]!r} {float(credit.token_advantages[i, j]):+.2f}" for j in top)
        )
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_train_discriminator(ns: argparse.Namespace) -> int:
    from zjulab.rtt import (
        DiscriminatorConfig,
        DiscriminatorTrainer,
        LabelAlignmentError,
        RelevanceDiscriminator,
        RelevanceExample,
    )
    from zjulab.rtt.prompts import iter_records
    from zjulab.rtt.synthetic import colour_examples

    if ns.data:
        examples = []
        for lineno, r in iter_records(ns.data, "span data"):
            try:
                if not isinstance(r, dict):
                    raise LabelAlignmentError(f"expected a JSON object, got {type(r).__name__}")
                if not isinstance(r.get("criterion"), str) or not isinstance(r.get("response"), str):
                    raise LabelAlignmentError("needs 'criterion' and 'response' strings")
                spans = r.get("spans") or []
                if not isinstance(spans, list) or not all(isinstance(sp, (list, tuple)) for sp in spans):
                    raise LabelAlignmentError("'spans' must be a list of [start, end] pairs")
                examples.append(RelevanceExample(r["criterion"], r["response"], [tuple(sp) for sp in spans]))
            except (LabelAlignmentError, AttributeError, TypeError, ValueError) as exc:
                raise LabelAlignmentError(f"{ns.data}:{lineno}: {exc}") from exc
        if not examples:
            raise LabelAlignmentError(f"{ns.data}: no examples")
    else:
        examples = colour_examples(ns.synthetic, seed=ns.seed)
    if ns.out:
        from pathlib import Path

        out = Path(ns.out)
        if out.exists() and not out.is_dir():
            raise ZjulabError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (out / "rtt_discriminator.json").is_file():
            raise ZjulabError(
                f"--out {out} is a folder that is not empty and holds no saved discriminator; "
                "choose a new or empty folder"
            )
    cut = max(1, int(len(examples) * (1 - ns.eval_fraction)))
    train, held = examples[:cut], examples[cut:]
    if ns.tiny:
        from zjulab.common.testing import tiny_causal_lm

        m, tok = tiny_causal_lm(ns.seed)
        disc = RelevanceDiscriminator.from_causal_lm(m, tok, max_length=ns.max_length)
    else:
        disc = RelevanceDiscriminator.from_pretrained(ns.model, device=ns.device, max_length=ns.max_length)
    cfg = DiscriminatorConfig(
        learning_rate=ns.lr, epochs=ns.epochs, batch_size=ns.batch_size, lora_r=ns.lora_r, seed=ns.seed
    )
    trainer = DiscriminatorTrainer(disc, cfg)
    losses = trainer.train(train)
    print(
        f"trained on {len(train)} examples: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps"
    )
    if held:
        sc = trainer.evaluate(held)
        print(
            f"held-out token P/R/F1: {sc.precision:.3f} / {sc.recall:.3f} / {sc.f1:.3f} over {sc.tokens} tokens"
        )
    if ns.out:
        trainer.discriminator.save(ns.out)
        print(f"saved to {ns.out}")
    return 0


def _prompts(ns: argparse.Namespace) -> list[Any]:
    from zjulab.rtt import load_ifeval, load_rubric_prompts

    if ns.data:
        prompts = load_rubric_prompts(ns.data)
    else:
        path = ns.ifeval or os.environ.get("ZJULAB_IFEVAL", "")
        if not path:
            raise ZjulabError(
                "name the prompts with --data (rubric JSONL) or --ifeval (IFEval input_data.jsonl)"
            )
        prompts = load_ifeval(path)
    return prompts[: ns.limit] if ns.limit else prompts


def _judge_model(ns: argparse.Namespace) -> Any:
    """The judge of free-text rubrics: an OpenAI-compatible server, or a local model by id/path."""
    if not ns.judge_model:
        if ns.judge_base_url:
            raise ZjulabError("--judge-base-url needs --judge-model (the served model's name)")
        return None
    if ns.judge_base_url:
        from zjulab.common.chat import OpenAIChatModel

        return OpenAIChatModel(
            ns.judge_model,
            ns.judge_base_url,
            api_key_env=ns.judge_api_key_env,
            max_new_tokens=ns.judge_max_new_tokens,
        )
    from zjulab.common.chat import TransformersChatModel

    return TransformersChatModel(ns.judge_model, device=ns.device, max_new_tokens=ns.judge_max_new_tokens)


def _cmd_train(ns: argparse.Namespace) -> int:
    from datasets import Dataset

    from zjulab.rtt import (
        RelevanceDiscriminator,
        RoutedRelevance,
        RTTConfig,
        RTTGRPOTrainer,
        RubricReward,
        SpanRelevance,
        UniformRelevance,
    )
    from zjulab.rtt.prompts import to_dataset_rows

    _check_output_dir(ns.output_dir)
    prompts = _prompts(ns)
    if ns.judge_rubric:
        from zjulab.rtt.rubrics import Rubric

        extra = [Rubric.judge(text) for text in ns.judge_rubric]
        for p in prompts:
            p.rubrics = [*p.rubrics, *extra]
    judge = _judge_model(ns)
    if judge is None and any(r.kind == "judge" for p in prompts for r in p.rubrics):
        raise ZjulabError(
            "the prompts have judge rubrics (free-text criteria); give the judge with --judge-model "
            "(and --judge-base-url for an OpenAI-compatible server)"
        )
    model, tok, name = _load_policy(ns.model, ns.device, False)
    relevance: Any
    if ns.discriminator:
        relevance = RelevanceDiscriminator.load(ns.discriminator, device=ns.device)
        if ns.relevance == "routed":
            relevance = RoutedRelevance(relevance)
    elif ns.relevance == "routed":
        raise ZjulabError("--relevance routed needs --discriminator (it scores the judge rubrics)")
    elif ns.relevance == "span":
        relevance = SpanRelevance()
    else:
        relevance = UniformRelevance()
    scratch = tempfile.mkdtemp(prefix="zjulab-rtt-train-")
    try:
        trainer = RTTGRPOTrainer(
            model,
            RubricReward(judge, aggregate=ns.aggregate, judge_max_new_tokens=ns.judge_max_new_tokens),
            relevance,
            RTTConfig(
                lam=ns.lam, combine=ns.combine, token_norm=ns.token_norm, token_adv_clip=ns.token_adv_clip
            ),
            args=_grpo_args(scratch, ns, ns.steps),  # TRL's own files stay out of the user's folder
            train_dataset=Dataset.from_list(to_dataset_rows(prompts)),
            processing_class=tok,
        )
        print(f"RTT-GRPO on {name}: {len(prompts)} prompts, {ns.steps} steps")
        trainer.train()
        from zjulab.common.io import atomic_directory

        with atomic_directory(ns.output_dir) as tmp:  # a kill leaves the old folder or the new one whole
            trainer.save_model(str(tmp))
            (tmp / _OUTPUT_MARK).write_text("a policy saved by zjulab-rtt train\n", encoding="utf-8")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"saved the policy to {ns.output_dir}")
    return 0


_OUTPUT_MARK = ".zjulab-rtt-policy"


def _check_output_dir(path: str) -> None:
    """Refuse an output folder whose files this command did not write (it would replace them)."""
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ZjulabError(f"--output-dir {p} exists and is not a folder")
    if p.is_dir() and any(p.iterdir()) and not (p / _OUTPUT_MARK).is_file():
        raise ZjulabError(
            f"--output-dir {p} is a folder that is not empty and was not written by zjulab-rtt train; "
            "choose a new or empty folder"
        )


def _cmd_eval(ns: argparse.Namespace) -> int:
    from zjulab.common.chat import TransformersChatModel
    from zjulab.rtt import rubric_accuracy

    prompts = _prompts(ns)
    if ns.model is None:
        from zjulab.common.defaults import default_chat_model_path

        model_path = str(default_chat_model_path())
    else:
        model_path = ns.model
    chat = TransformersChatModel(
        model_path, device=ns.device, batch_size=ns.batch_size, max_new_tokens=ns.max_new_tokens
    )
    answers = chat.generate([[{"role": "user", "content": p.prompt}] for p in prompts])
    acc = rubric_accuracy([p.prompt for p in prompts], answers, [p.rubrics for p in prompts])
    print(
        json.dumps(
            {
                "instruction_level": acc.instruction_level,
                "rubric_level": acc.rubric_level,
                "responses": acc.responses,
                "rubrics": acc.rubrics,
            },
            indent=2,
        )
    )
    return 0


def _add_rl_args(p: argparse.ArgumentParser, steps: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help="optimiser steps")
    p.add_argument("--num-generations", type=int, default=4, help="responses per prompt (G)")
    p.add_argument("--prompts-per-step", type=int, default=1, help="prompts per batch")
    p.add_argument("--max-completion-length", type=int, default=24, help="tokens per response")
    p.add_argument("--lr", type=float, default=1e-5, help="policy learning rate")
    p.add_argument("--lam", type=float, default=0.5, help="weight λ of the token advantage")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zjulab-rtt``."""
    parser = argparse.ArgumentParser(
        prog="zjulab-rtt", description="Rubrics to Tokens: token-level rubric credit for GRPO."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="two RTT-GRPO steps on the embedded model, per-token credit in colour")
    _add_rl_args(d, 2)
    d.set_defaults(max_completion_length=20)
    d.add_argument("--tiny", action="store_true", help="use a tiny random model instead of the embedded one")
    d.add_argument("--device", default="cpu")

    td = sub.add_parser("train-discriminator", help="fit the token relevance discriminator")
    td.add_argument("--model", default=None, help="backbone hub id or path (default Qwen/Qwen3-0.6B)")
    td.add_argument("--tiny", action="store_true", help="tiny random backbone (smoke test)")
    td.add_argument("--data", help="JSONL of {criterion, response, spans: [[start, end], ...]}")
    td.add_argument("--synthetic", type=int, default=200, help="without --data: 'mention a colour' examples")
    td.add_argument("--eval-fraction", type=float, default=0.2, help="held-out share for token F1")
    td.add_argument("--out", help="directory to save the discriminator")
    td.add_argument("--epochs", type=int, default=1)
    td.add_argument("--lr", type=float, default=2e-5)
    td.add_argument("--batch-size", type=int, default=8)
    td.add_argument("--max-length", type=int, default=1024)
    td.add_argument("--lora-r", type=int, default=None)
    td.add_argument("--device", default="auto")
    td.add_argument("--seed", type=int, default=0)

    tr = sub.add_parser("train", help="RTT-GRPO on a rubric data set")
    tr.add_argument("--model", help="policy hub id or path (default: the embedded SmolLM2)")
    tr.add_argument("--data", help="rubric prompts JSONL ({prompt, rubrics})")
    tr.add_argument("--ifeval", help="IFEval input_data.jsonl")
    tr.add_argument("--limit", type=int, default=None)
    tr.add_argument("--discriminator", help="saved discriminator directory")
    tr.add_argument(
        "--relevance",
        choices=["span", "uniform", "routed"],
        default="span",
        help="without --discriminator: checker spans or uniform; routed (with --discriminator): "
        "checker spans for checked rubrics, the discriminator for judged ones",
    )
    tr.add_argument("--combine", choices=["add", "mix"], default="add")
    tr.add_argument(
        "--token-norm",
        default="intra_sample",
        choices=["intra_sample", "group_token", "rubric_mean_group_token", "softmax_rubrics"],
    )
    tr.add_argument("--aggregate", choices=["all", "rate"], default="all")
    tr.add_argument(
        "--judge-rubric",
        action="append",
        default=[],
        metavar="TEXT",
        help="a free-text criterion added to every prompt's rubrics, scored by the judge (repeatable)",
    )
    tr.add_argument("--judge-model", help="judge of free-text rubrics: served model name, hub id or path")
    tr.add_argument(
        "--judge-base-url", help="OpenAI-compatible server of the judge, e.g. http://127.0.0.1:8000/v1"
    )
    tr.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with its API key"
    )
    tr.add_argument("--judge-max-new-tokens", type=int, default=512, help="room for a reasoning judge")
    tr.add_argument("--token-adv-clip", type=float, default=None, help="clip token advantages to [-c, c]")
    tr.add_argument("--output-dir", default="rtt-grpo-out")
    tr.add_argument("--device", default="auto")
    _add_rl_args(tr, 100)

    ev = sub.add_parser("eval", help="instruction- and rubric-level accuracy of a model")
    ev.add_argument("--model", help="hub id or path (default: the embedded SmolLM2)")
    ev.add_argument("--data")
    ev.add_argument("--ifeval")
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--max-new-tokens", type=int, default=256)
    ev.add_argument("--device", default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``zjulab-rtt``."""
    ns = build_parser().parse_args(argv)
    commands = {
        "demo": _cmd_demo,
        "train-discriminator": _cmd_train_discriminator,
        "train": _cmd_train,
        "eval": _cmd_eval,
    }
    return run_command(commands[ns.command], ns, prog="zjulab-rtt")


if __name__ == "__main__":
    sys.exit(main())
