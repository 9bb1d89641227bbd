"""Replay: re-execute the operations downstream of a changed one.

Give some operations a corrected output (``overrides``) or patched constant arguments such as
a prompt (``patches``); :func:`replay` then re-runs, in topological order, exactly the
operations whose inputs changed — each through its recorded handle with its recorded
argument binding — and returns the new value of every variable, the new final answer, and
the list of operations it executed. The original trace is left untouched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.memtrace.errors import ReplayError
from zjulab.memtrace.graph import Operation, Slot, Trace

__all__ = ["ReplayResult", "replay"]

logger = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    """What a replay produced.

    Args:
        executed: Ids of the operations re-run, in order.
        values: Value of every variable after the replay (unchanged ones included).
        final: The new value of the trace's final variable.
        changed: Ids of the variables whose value was replaced.
    """

    executed: list[str]
    values: dict[str, Any]
    final: Any
    changed: list[str] = field(default_factory=list)


def _split_outputs(op: Operation, value: Any) -> list[Any]:
    if len(op.outputs) <= 1:
        return [value]
    if isinstance(value, Mapping):
        return [value[k] for k in op.outputs]
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == len(op.outputs):
        return list(value)
    raise ReplayError(
        f"operation {op.id} ({op.name}) has {len(op.outputs)} outputs; give the override as a "
        f"sequence of that length or a mapping by variable id"
    )


class _Outputs:
    """An operation seen with only its returned outputs (not the arguments it mutated)."""

    def __init__(self, op: Operation, outputs: list[str]):
        self.id, self.name, self.outputs = op.id, op.name, outputs


def _bind(slot: Slot, values: Mapping[str, Any], trace: Trace, changed: set[str], op: Operation) -> Any:
    if slot.var is None:
        return copy.deepcopy(slot.const)
    var = trace.variables[slot.var]
    if not var.serializable and slot.var not in changed:
        raise ReplayError(
            f"operation {op.id} ({op.name}) reads {var.label}, which the trace file could not hold "
            "losslessly (stored by repr or changed type through JSON); re-record the trace to replay it"
        )
    parts = var.meta.get("parts")
    if isinstance(parts, Mapping) and slot.var not in changed and any(p in changed for p in parts.values()):
        return _rebuild(values[slot.var], parts, values, changed, op)
    return copy.deepcopy(values[slot.var])


def _rebuild(
    value: Any, parts: Mapping[str, str], values: Mapping[str, Any], changed: set[str], op: Operation
) -> Any:
    """A container built from recorded values, rebuilt from the values a replay changed.

    For example the list ``[summarise(c) for c in chunks]`` after one summary was corrected.
    """
    out = copy.deepcopy(value)
    seq = list(out) if isinstance(out, tuple) else out
    for key, vid in parts.items():
        if vid not in changed:
            continue
        if isinstance(seq, list) and key.isdigit() and int(key) < len(seq):
            seq[int(key)] = copy.deepcopy(values[vid])
        elif isinstance(seq, dict) and key in seq:
            seq[key] = copy.deepcopy(values[vid])
        else:
            raise ReplayError(f"operation {op.id} ({op.name}): cannot rebuild an argument at {key!r}")
    return tuple(seq) if isinstance(out, tuple) else seq


def _run_async(obj: Any) -> Any:
    """The result of an async step's coroutine (or the items of its async stream)."""

    async def collect() -> Any:
        if inspect.isasyncgen(obj):
            return [item async for item in obj]
        return await obj

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(collect())
    # called from async code: the step runs on its own loop in a worker thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, collect()).result()


def replay(
    trace: Trace,
    overrides: Mapping[str, Any] | None = None,
    *,
    patches: Mapping[str, Mapping[str, Any]] | None = None,
    handles: Mapping[str, Callable[..., Any]] | None = None,
) -> ReplayResult:
    """Re-execute everything downstream of the overridden or patched operations.

    Args:
        trace: A trace whose operations have handles (recorded live, or attached on load).
        overrides: Operation id -> corrected output (for several outputs: a sequence in output
            order or a mapping by variable id). The operation itself is not re-run.
        patches: Operation id -> {argument name: new constant} (for example
            ``{"op3": {"prompt": "..."}}``). The operation is re-run with the new arguments.
        handles: Extra callables by operation id, overriding the trace's own.

    Returns:
        The replay result.

    Raises:
        ReplayError: An id is unknown, an operation to re-run has no handle, a patched
            argument does not exist, or a handle raised.
    """
    overrides = dict(overrides or {})
    patches = {k: dict(v) for k, v in (patches or {}).items()}
    for oid in [*overrides, *patches]:
        if oid not in trace.operations:
            raise ReplayError(f"no operation {oid!r} in trace {trace.id}")
    values: dict[str, Any] = {vid: v.value for vid, v in trace.variables.items()}
    changed: set[str] = set()
    aliases: dict[str, list[str]] = {}
    for vid, var in trace.variables.items():
        target = var.meta.get("alias_of")
        if isinstance(target, str) and target in trace.variables:
            aliases.setdefault(target, []).append(vid)

    def put(vid: str, val: Any) -> None:
        # a wrapper's output that is an inner operation's output follows it
        values[vid] = val
        changed.add(vid)
        for alias in aliases.get(vid, ()):
            if alias not in changed:
                put(alias, val)

    for oid, new in overrides.items():
        op = trace.operations[oid]
        for vid, val in zip(op.outputs, _split_outputs(op, new)):
            put(vid, val)
    for oid, patch in patches.items():
        op = trace.operations[oid]
        known = {n for n in op.arg_names if n} | set(op.kwargs)
        missing = sorted(set(patch) - known)
        if missing:
            raise ReplayError(
                f"operation {oid} ({op.name}) has no argument {missing[0]!r}; arguments: {sorted(known)}"
            )

    order = trace.topological_operations()
    live = dict(trace.handles)
    live.update(handles or {})
    executed: list[str] = []
    running: set[str] = set()
    for oid in order:
        op = trace.operations[oid]
        if oid in overrides:
            continue
        reads_changed = any(v in changed for v in op.inputs)
        if not reads_changed and oid not in patches:
            continue
        if op.parent is not None and op.parent in running:
            continue  # re-run inside its parent's handle
        fn = live.get(oid)
        if fn is None:
            raise ReplayError(
                f"operation {oid} ({op.name}) must be re-run but has no handle; pass handles= "
                f"(ref {op.handle_ref!r})"
            )
        patch = patches.get(oid, {})
        args = [
            patch[name] if name is not None and name in patch else _bind(slot, values, trace, changed, op)
            for slot, name in zip(op.args, op.arg_names + [None] * (len(op.args) - len(op.arg_names)))
        ]
        kwargs = {
            k: patch[k] if k in patch else _bind(slot, values, trace, changed, op)
            for k, slot in op.kwargs.items()
        }
        try:
            result = fn(*args, **kwargs)
            if inspect.isgenerator(result):  # a streaming step's output is what it yields
                result = list(result)
            elif inspect.iscoroutine(result) or inspect.isasyncgen(result):
                result = _run_async(result)
        except Exception as exc:
            from zjulab.memtrace.redaction import DEFAULT_REDACTOR

            # the message may quote a value the step saw: it is redacted like every other sink
            raise ReplayError(
                f"operation {oid} ({op.name}) raised during replay: {DEFAULT_REDACTOR.text(repr(exc))}"
            ) from exc
        executed.append(oid)
        running.add(oid)
        mutates: dict[str, str] = op.meta.get("mutates") or {}
        returned = [v for v in op.outputs if v not in mutates]
        if len(returned) <= 1 or op.output_mode == "single":
            outs = [result]
        else:
            outs = _split_outputs(_Outputs(op, returned), result)
        for vid, val in zip(returned, outs):
            put(vid, val)
        for vid, key in mutates.items():  # an argument the operation changed in place
            put(vid, args[int(key)] if key.isdigit() and int(key) < len(args) else kwargs.get(key))
    final = trace.final
    logger.debug("replay of %s re-ran %d operations", trace.id, len(executed))
    return ReplayResult(
        executed=executed,
        values={k: v if k in changed else copy.deepcopy(v) for k, v in values.items()},
        final=None
        if final is None
        else (values[final] if final in changed else copy.deepcopy(values[final])),
        changed=[v for v in trace.variables if v in changed],
    )
