"""``zjulab-serl``: train with SERL, rank responses with the Copeland rule, evaluate, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from zjulab.common.cli import run_command
from zjulab.serl.outputs import check_replaceable

# A terse judge prompt: a 135M model rarely follows the full default template's box format.
DEMO_JUDGE_TEMPLATE = (
    "Question: {instruction}\n\nAnswer 1: {response_1}\n\nAnswer 2: {response_2}\n\n"
    "Which answer is better? Reply with only the number 1 or 2."
)

DEMO_PROMPTS = [
    "Give one practical tip for staying focused while studying.",
    "Name a fruit that is rich in vitamin C and say why it is healthy.",
]


def _chat_model(model: str | None, base_url: str | None, device: str, max_new_tokens: int) -> Any:
    """A judge or generator: served (OpenAI-compatible), local by id/path, or the embedded default."""
    from zjulab.common.chat import OpenAIChatModel, TransformersChatModel
    from zjulab.common.defaults import default_chat_model

    if base_url:
        if not model:
            raise SystemExit("--base-url needs --model (the served model's name)")
        return OpenAIChatModel(model, base_url, max_new_tokens=max_new_tokens)
    if model is None:
        return default_chat_model(device=device, max_new_tokens=max_new_tokens)
    return TransformersChatModel(model, device=device, max_new_tokens=max_new_tokens)


def _read_rows(path: str) -> list[Any]:
    from zjulab.common.io import read_json, read_jsonl

    data = read_jsonl(path) if path.endswith(".jsonl") else read_json(path)
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a JSON list or JSON lines")
    return data


def _is_judgments_file(doc: Any) -> bool:
    """Whether parsed JSON is a ``judge -o`` output (a list of group judgments)."""
    keys = {"instruction", "responses", "verdict_matrix", "actor_rewards", "ranking", "judgments"}
    return isinstance(doc, list) and all(isinstance(g, dict) and keys <= g.keys() for g in doc)


def _is_annotations_file(doc: Any) -> bool:
    """Whether parsed JSON is an ``eval --annotations`` output."""
    return isinstance(doc, dict) and doc.get("format") == "zjulab-serl/annotations"


def _answer_store(cache: str | None, output: str | None) -> tuple[Any, str | None]:
    """The store of a command's model answers, and the file to remove once the command succeeds.

    With ``--cache`` the answers are kept in that file for good; otherwise, when the command
    writes an output, in ``<output>.answers.jsonl`` until the output is written (a rerun after an
    interruption asks only what was not answered).
    """
    from zjulab.serl.answers import AnswerStore

    if cache:
        return AnswerStore(cache), None
    if output:
        path = f"{output}.answers.jsonl"
        return AnswerStore(path), path
    return AnswerStore(), None


def _drop(path: str | None) -> None:
    if path and os.path.exists(path):
        os.unlink(path)


def _short(text: str, width: int = 90) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 3] + "..."


def _print_group(g: Any, show_raw: int = 3) -> None:
    from zjulab.serl.judge import format_matrix

    print(f"\nPrompt: {g.instruction}")
    for i, r in enumerate(g.responses):
        print(f"  [{i}] {_short(r)}")
    for s, v, t in list(zip(g.slots, g.verdicts, g.raw))[:show_raw]:
        print(f"  judge({s.first} vs {s.second}) -> {v!s:4}  {_short(t, 60)!r}")
    print("  verdict matrix (row beat column) and Actor rewards:")
    print("\n".join("  " + line for line in format_matrix(g.matrix, g.actor_rewards).splitlines()))
    print(f"  judge rewards: {[int(x) for x in g.judge_rewards]}")
    print(f"  ranking: {g.ranking()}")


def cmd_demo(args: argparse.Namespace) -> int:
    """One SERL step on the embedded SmolLM2-135M-Instruct with two prompts."""
    from datasets import Dataset
    from transformers import PrinterCallback

    from zjulab.common.defaults import default_chat_model_path
    from zjulab.common.loading import load_causal_lm, load_tokenizer
    from zjulab.common.seeding import seed_everything
    from zjulab.serl.serl_config import SERLConfig
    from zjulab.serl.trainer import SERLTrainer

    t0, c0 = time.perf_counter(), time.process_time()
    seed_everything(args.seed)
    path = default_chat_model_path()
    model = load_causal_lm(str(path), device=args.device, dtype="float32")
    tok = load_tokenizer(str(path))
    tok.padding_side = "left"
    n, k = args.num_generations, args.num_judge_generations
    with tempfile.TemporaryDirectory() as out:
        config = SERLConfig(
            output_dir=out,
            num_generations=n,
            num_judge_generations=k,
            per_device_train_batch_size=n * len(DEMO_PROMPTS),
            max_completion_length=args.max_completion_length,
            max_judge_completion_length=args.max_judge_completion_length,
            temperature=0.8,
            max_steps=1,
            learning_rate=1e-5,
            logging_steps=1,
            report_to=[],
            bf16=False,
            use_cpu=str(args.device) == "cpu",
            save_strategy="no",
            disable_tqdm=True,
            verdict_format="lenient",  # a 135M model rarely writes the box; read plain verdicts too
            read_truncated_verdicts=True,  # nor stops after the number within a few tokens
            judge_template=DEMO_JUDGE_TEMPLATE,
            loss_schedule="constant",
            actor_loss_weight=0.5,  # the paper's weights once the Judge warm-up is over
            judge_loss_weight=0.5,
            seed=args.seed,
        )
        ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in DEMO_PROMPTS]})
        trainer = SERLTrainer(model, args=config, train_dataset=ds, processing_class=tok)
        trainer.remove_callback(PrinterCallback)  # the summary below replaces the raw log line
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        print(
            f"SERL demo: embedded SmolLM2-135M-Instruct as Actor and Judge; {len(DEMO_PROMPTS)} prompts, "
            f"N={n} actor rollouts each, K={k} judge rollouts per pair "
            f"({len(DEMO_PROMPTS) * n * (n - 1) // 2 * k} judge rollouts)"
        )
        trainer.train()
        moved = sum(float((p.detach() - before[name]).norm()) for name, p in model.named_parameters())
    for g in trainer.last_judgments:
        _print_group(g)
    logs = trainer.state.log_history[0] if trainer.state.log_history else {}
    print("\nDiagnostics of the judge (this step):")
    for key in ("consistency_rate", "position_bias", "invalid_rate", "reward_spread"):
        value = logs.get(f"serl/{key}")
        print(f"  {key:>16}: {'n/a' if value is None else f'{value:.3f}'}")
    print(
        f"\nLoss = alpha*L_actor + beta*L_judge with alpha={logs.get('serl/alpha', 0):.2f}, "
        f"beta={logs.get('serl/beta', 0):.2f}: L_actor={logs.get('serl/actor_loss', float('nan')):.4f}, "
        f"L_judge={logs.get('serl/judge_loss', float('nan')):.4f}; weights moved by {moved:.2e} (L2 sum)"
    )
    print(f"done in {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Rank groups of responses with the Copeland rule."""
    from zjulab.common.io import write_json
    from zjulab.serl.config import JudgeConfig
    from zjulab.serl.judge import CopelandJudge

    if args.output:
        check_replaceable(args.output, _is_judgments_file, overwrite=args.overwrite)
    rows = _read_rows(args.input)
    groups = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("instruction"), str)
            or not isinstance(row.get("responses"), list)
        ):
            raise SystemExit(f"{args.input}: row {i} needs 'instruction' (string) and 'responses' (list)")
        groups.append((row["instruction"], row["responses"]))
    cfg = JudgeConfig(
        num_judgments=args.num_judgments,
        actor_reward=args.actor_reward,
        verdict_format="lenient" if args.lenient else "boxed",
        max_new_tokens=args.max_new_tokens,
    )
    store, temporary = _answer_store(args.cache, args.output)
    chat = _chat_model(args.model, args.base_url, args.device, args.max_new_tokens)
    results = CopelandJudge(chat, cfg, answers=store).judge_many(groups)
    for g in results:
        _print_group(g, show_raw=0)
        d = g.diagnostics.as_dict()
        print(
            f"  consistency {d['consistency_rate']:.2f}, invalid {d['invalid_rate']:.2f}, position bias {d['position_bias']:+.2f}"
        )
    if args.output:
        write_json(args.output, [g.to_dict() for g in results])
        _drop(temporary)
        print(f"\nwrote {args.output}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Answer instructions with a model and write AlpacaEval-format outputs."""
    from zjulab.serl.evaluation import generate_outputs, write_alpacaeval_outputs

    # AlpacaEval outputs carry no mark of who wrote them: an existing file is replaced only on request
    check_replaceable(args.output, lambda doc: False, overwrite=args.overwrite)
    rows = _read_rows(args.instructions)
    instructions = [
        r if isinstance(r, str) else r.get("instruction") if isinstance(r, dict) else None for r in rows
    ]
    if not all(isinstance(x, str) for x in instructions):
        raise SystemExit(f"{args.instructions}: each row must be a string or have an 'instruction' string")
    store, temporary = _answer_store(args.cache, args.output)
    chat = _chat_model(args.model, args.base_url, args.device, args.max_new_tokens)
    outputs = generate_outputs(chat, instructions, store, temperature=args.temperature)
    write_alpacaeval_outputs(args.output, instructions, outputs, args.generator or chat.model_id)
    _drop(temporary)
    print(f"wrote {len(outputs)} outputs to {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Pairwise (LC) win rate of model outputs against reference outputs."""
    from zjulab.serl.config import JudgeConfig
    from zjulab.serl.evaluation import pairwise_win_rate, read_alpacaeval_outputs, write_annotations

    if args.annotations:
        check_replaceable(args.annotations, _is_annotations_file, overwrite=args.overwrite)
    model_rows = read_alpacaeval_outputs(args.model_outputs)
    ref_rows = {r["instruction"]: r for r in read_alpacaeval_outputs(args.reference_outputs)}
    missing = [r["instruction"] for r in model_rows if r["instruction"] not in ref_rows]
    if missing:
        raise SystemExit(f"{len(missing)} instructions have no reference output, e.g. {missing[0]!r}")
    instructions = [r["instruction"] for r in model_rows]
    cfg = JudgeConfig(
        verdict_format="lenient" if args.lenient else "boxed", max_new_tokens=args.max_new_tokens
    )
    store, temporary = _answer_store(args.cache, args.annotations)
    judge = _chat_model(args.judge_model, args.base_url, args.device, args.max_new_tokens)
    result = pairwise_win_rate(
        instructions,
        [r["output"] for r in model_rows],
        [ref_rows[i]["output"] for i in instructions],
        judge,
        config=cfg,
        both_orders=not args.one_order,
        answers=store,
    )
    print(json.dumps(result.to_dict(), indent=2))
    if args.annotations:
        gen = str(model_rows[0].get("generator", "model"))
        ref = str(next(iter(ref_rows.values())).get("generator", "reference"))
        write_annotations(args.annotations, result, gen, ref)
        _drop(temporary)
        print(f"wrote {args.annotations}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model with SERL on a prompt file."""
    from datasets import Dataset

    from zjulab.serl.serl_config import SERLConfig
    from zjulab.serl.trainer import SERLTrainer

    rows = _read_rows(args.data)
    prompts: list[Any] = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            prompts.append([{"role": "user", "content": row}])
        elif isinstance(row, dict) and ("prompt" in row or "instruction" in row):
            p = row.get("prompt", row.get("instruction"))
            prompts.append([{"role": "user", "content": p}] if isinstance(p, str) else p)
        else:
            raise SystemExit(f"{args.data}: row {i} needs a 'prompt' or 'instruction' field")
    config = SERLConfig(
        output_dir=args.output_dir,
        num_generations=args.num_generations,
        num_judge_generations=args.num_judge_generations,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        judge_micro_batch_size=args.judge_micro_batch_size,
        max_completion_length=args.max_completion_length,
        max_judge_completion_length=args.max_judge_completion_length,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        actor_reward=args.actor_reward,
        verdict_format="lenient" if args.lenient else "boxed",
        logging_steps=1,
        report_to=args.report_to,
        bf16=args.bf16,
        use_cpu=args.device == "cpu",
        save_strategy="no" if args.no_save else ("steps" if args.save_steps else "epoch"),
        save_steps=args.save_steps or 500,
        seed=args.seed,
    )
    resume = None
    if args.resume:
        from transformers.trainer_utils import get_last_checkpoint

        from zjulab.serl.errors import SERLConfigError

        resume = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        if resume is None:
            raise SERLConfigError(
                f"--resume: {args.output_dir} holds no checkpoint-<step> folder to resume from"
            )
    peft_config = None
    if args.lora_r:
        from zjulab.common.deps import require

        LoraConfig = require("peft", "pip install 'zjulab-serl[peft]'", feature="--lora-r").LoraConfig
        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = SERLTrainer(
        args.model, args=config, train_dataset=Dataset.from_dict({"prompt": prompts}), peft_config=peft_config
    )
    trainer.train(resume_from_checkpoint=resume)
    if not args.no_save:
        trainer.save_model(args.output_dir)
        print(f"saved to {args.output_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``zjulab-serl``."""
    p = argparse.ArgumentParser(prog="zjulab-serl", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="one SERL step on the embedded model (offline, < 1 min on CPU)")
    d.add_argument("--device", default="cpu")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--num-generations", type=int, default=3, help="N actor rollouts per prompt")
    d.add_argument("--num-judge-generations", type=int, default=2, help="K judge rollouts per pair")
    d.add_argument("--max-completion-length", type=int, default=20)
    d.add_argument("--max-judge-completion-length", type=int, default=5)
    d.set_defaults(func=cmd_demo)

    j = sub.add_parser("judge", help="rank responses with the Copeland rule")
    j.add_argument("input", help="JSON/JSONL rows {'instruction': str, 'responses': [str, ...]}")
    j.add_argument("--model", help="judge model id/path (default: the embedded model), or the served name")
    j.add_argument("--base-url", help="OpenAI-compatible server URL (vLLM, SGLang, ...)")
    j.add_argument("--device", default="auto")
    j.add_argument("-k", "--num-judgments", type=int, default=2)
    j.add_argument("--actor-reward", choices=["length_controlled", "copeland"], default="length_controlled")
    j.add_argument("--lenient", action="store_true", help="accept verdicts outside \\boxed{}")
    j.add_argument("--max-new-tokens", type=int, default=256)
    j.add_argument("-o", "--output", help="write the judgments as JSON")
    j.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    j.add_argument(
        "--cache", help="keep the model's answers in this JSON-lines file (a rerun asks only the unanswered)"
    )
    j.set_defaults(func=cmd_judge)

    g = sub.add_parser("generate", help="answer instructions and write AlpacaEval-format outputs")
    g.add_argument("instructions", help="JSON/JSONL list of strings or of rows with 'instruction'")
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    g.add_argument(
        "--cache", help="keep the model's answers in this JSON-lines file (a rerun asks only the unanswered)"
    )
    g.add_argument("--model", help="model id/path (default: the embedded model), or the served name")
    g.add_argument("--base-url")
    g.add_argument("--generator", help="name written in the 'generator' field")
    g.add_argument("--device", default="auto")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("eval", help="pairwise win rate against reference outputs")
    e.add_argument("--model-outputs", required=True, help="AlpacaEval-format outputs of the model")
    e.add_argument("--reference-outputs", required=True, help="AlpacaEval-format outputs of the reference")
    e.add_argument("--judge-model", help="judge id/path (default: the embedded model), or the served name")
    e.add_argument("--base-url")
    e.add_argument("--device", default="auto")
    e.add_argument(
        "--one-order", action="store_true", help="show the reference first only (AlpacaEval style)"
    )
    e.add_argument("--lenient", action="store_true")
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--annotations", help="write per-item judgments (AlpacaEval annotation layout)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.add_argument(
        "--cache", help="keep the model's answers in this JSON-lines file (a rerun asks only the unanswered)"
    )
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="train with SERL")
    t.add_argument("--model", required=True, help="hub id or local path of the policy")
    t.add_argument(
        "--data", required=True, help="JSON/JSONL prompts (strings or rows with 'prompt'/'instruction')"
    )
    t.add_argument("--output-dir", required=True)
    t.add_argument("--num-generations", type=int, default=4)
    t.add_argument("--num-judge-generations", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=4, help="actor rollouts per device per step")
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument(
        "--judge-micro-batch-size", type=int, default=None, help="most judge rows per forward pass"
    )
    t.add_argument("--max-completion-length", type=int, default=512)
    t.add_argument("--max-judge-completion-length", type=int, default=256)
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=-1)
    t.add_argument("--learning-rate", type=float, default=1e-6)
    t.add_argument("--actor-reward", choices=["length_controlled", "copeland"], default="length_controlled")
    t.add_argument("--lenient", action="store_true")
    t.add_argument("--lora-r", type=int, default=0, help="train a LoRA adapter of this rank (needs peft)")
    t.add_argument("--bf16", action="store_true")
    t.add_argument("--device", default="auto", help="'cpu' forces CPU; otherwise accelerate decides")
    t.add_argument("--report-to", nargs="*", default=[])
    t.add_argument("--no-save", action="store_true")
    t.add_argument(
        "--save-steps", type=int, default=0, help="save a checkpoint every N steps (default: each epoch)"
    )
    t.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint saved in --output-dir"
    )
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zjulab-serl``."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, prog="zjulab-serl")


if __name__ == "__main__":
    sys.exit(main())
