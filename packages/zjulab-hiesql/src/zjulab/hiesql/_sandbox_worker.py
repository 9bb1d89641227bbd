"""The worker process of ``SandboxConfig(isolation="process")``: one hardened connection under rlimits.

Started by :class:`zjulab.hiesql.sandbox.SQLiteSandbox` (a bootstrap that imports only the
sandbox's modules, not the whole package); requests and replies are length-prefixed ``marshal`` frames on stdin/stdout (plain values only).
The address space is capped at ``memory_limit_bytes`` and, before each statement, the CPU-time
soft limit is set to the CPU already used plus the statement's time limit (SIGXCPU ends the
process if SQLite is stuck inside one opcode); the parent kills the process at the wall-clock
deadline in any case. Where ``resource`` does not exist (Windows) the rlimits are skipped and
only that wall-clock kill bounds a statement.
"""

from __future__ import annotations

import math
import os
import sys


def _limit(kind: int, soft: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    _cur, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def main() -> int:
    """Serve statements until stdin closes."""
    from zjulab.hiesql.config import SandboxConfig
    from zjulab.hiesql.errors import SandboxError, SandboxLimitError, SandboxPermissionError, SchemaFileError
    from zjulab.hiesql.sandbox import _Engine, _recv, _send

    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        resource = None  # type: ignore[assignment]
    fin, fout = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        path, raw = _recv(fin, None)
        raw["isolation"] = "in_process"
        raw["extra_functions"] = tuple(raw.get("extra_functions", ()))
        config = SandboxConfig(**raw)
        engine = _Engine(__import__("pathlib").Path(path), config)
        engine.connect()
        _limit(getattr(resource, "RLIMIT_AS", -1), int(config.memory_limit_bytes))
    except SchemaFileError as exc:
        _send(fout, ("fail", "file", str(exc)))
        return 1
    except Exception as exc:
        _send(fout, ("fail", "error", f"worker set-up failed: {exc!r}"))
        return 1
    _send(fout, ("ready",))
    kinds = ((SandboxPermissionError, "permission"), (SandboxLimitError, "limit"), (SandboxError, "error"))
    while True:
        try:
            sql, cap, params, timeout_s = _recv(fin, None)
        except EOFError:
            return 0
        if resource is not None:
            used = resource.getrusage(resource.RUSAGE_SELF)
            _limit(resource.RLIMIT_CPU, math.ceil(used.ru_utime + used.ru_stime + timeout_s) + 1)
        try:
            columns, rows, truncated, nbytes = engine.run(sql, int(cap), params, timeout_s)
            reply: tuple = ("ok", list(columns), rows, truncated, nbytes)
        except SandboxError as exc:
            kind = next(k for cls, k in kinds if isinstance(exc, cls))
            reply = ("err", kind, str(exc))
        except MemoryError:
            reply = ("err", "limit", f"statement exceeded the memory limit: {sql[:200]!r}")
        try:
            _send(fout, reply)
        except MemoryError:
            os._exit(3)


if __name__ == "__main__":
    raise SystemExit(main())
