"""Instrumentation: record a pipeline's operations into a :class:`~zjulab.memtrace.graph.Trace`.

Decorate each step with ``@tracer.operation("extract")`` and run the pipeline inside
``with tracer.trace() as trace:``. A value returned by one step and passed to another is the
same Python object, so the tracer links them by object identity: the return value becomes an
output variable, and an argument that is a known value becomes an input edge. Other data
arguments (strings, lists, dicts, tuples) become new *source* variables; scalars, arguments
named in ``params`` and other objects (models, ``self``) are recorded as constants.

The active recording lives in a :class:`contextvars.ContextVar`, so threads and asyncio
tasks each see their own recording, and nothing is recorded outside ``tracer.trace()``. A
decorated function called with no active recording costs one context-variable lookup.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import itertools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zjulab.memtrace.errors import TracingError
from zjulab.memtrace.graph import Operation, Slot, Trace

__all__ = ["OperationScope", "OperationSpec", "Tracer"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_DATA_TYPES = (str, bytes, list, dict, tuple, set, frozenset)
_SCALARS = (int, float, bool, type(None))
_tracer_ids = itertools.count()
# immutable values Python may share between unrelated code (interned strings, cached ints)
_SHAREABLE = (str, bytes, int, float, bool, tuple, frozenset, type(None))


def _linkable_element(el: Any) -> bool:
    if isinstance(el, (bool, int, float, type(None))):
        return False
    return not (isinstance(el, (str, bytes)) and len(el) < 2)


def _caller_literals(depth: int) -> tuple[Any, ...]:
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return ()
    consts: list[Any] = []
    stack = [frame.f_code]
    while stack:  # constants of the calling code, tuples of constants included
        for c in stack.pop().co_consts:
            consts.append(c)
            if isinstance(c, tuple):
                consts.extend(c)
    return tuple(consts)


def _snapshot(value: Any, mode: str) -> Any:
    if mode == "reference":
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        logger.debug("value of type %s cannot be deep-copied; kept by reference", type(value).__name__)
        return value


def _handle_ref(fn: Callable[..., Any]) -> str | None:
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    return f"{mod}:{qual}" if mod and qual else None


@dataclass
class _Recording:
    """One active trace plus the identity map from live objects to variable ids."""

    trace: Trace
    snapshot: str
    live: dict[int, tuple[str, Any]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    errors: dict[int, str] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)
    elements: dict[int, tuple[str, Any]] = field(default_factory=dict)
    literals: tuple[Any, ...] = ()
    children: dict[str, list[str]] = field(default_factory=dict)

    def lookup(self, value: Any) -> str | None:
        hit = self.live.get(id(value))
        if hit is not None and hit[1] is value:
            if isinstance(value, _SHAREABLE) and any(value is c for c in self.literals):
                return None  # a literal of the calling code that happens to be the same object
            return hit[0]
        return None

    def register(self, value: Any, name: str, kind: str, meta: dict[str, Any] | None = None) -> str:
        with self.lock:
            var = self.trace.add_variable(
                name, _snapshot(value, self.snapshot), kind=kind, created_ns=time.time_ns(), meta=meta or {}
            )
            self.live[id(value)] = (var.id, value)
            if isinstance(value, (list, tuple, set, frozenset)):
                for el in value:
                    if _linkable_element(el):
                        self.elements[id(el)] = (var.id, el)
            elif isinstance(value, dict):
                for el in value.values():
                    if _linkable_element(el):
                        self.elements[id(el)] = (var.id, el)
            return var.id

    def derived_from(self, value: Any) -> list[str]:
        """Variables whose elements (by identity) a new container is built from."""
        if isinstance(value, dict):
            items: Any = value.values()
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = value
        else:
            return []
        out: dict[str, None] = {}
        for el in items:
            if not _linkable_element(el) or any(el is c for c in self.literals):
                continue
            own = self.lookup(el)  # the element is itself a recorded value (a step's return value)
            if own is not None:
                out[own] = None
                continue
            hit = self.elements.get(id(el))
            if hit is not None and hit[1] is el:
                out[hit[0]] = None
        return list(out)

    def parts_of(self, value: Any) -> dict[str, str]:
        """Positions of a new container that hold recorded values themselves (``[s1, s2]``)."""
        if isinstance(value, dict):
            items: Any = ((k, v) for k, v in value.items() if isinstance(k, str))
        elif isinstance(value, (list, tuple)):
            items = ((str(i), v) for i, v in enumerate(value))
        else:
            return {}
        out = {}
        for key, el in items:
            if _linkable_element(el) and not any(el is c for c in self.literals):
                vid = self.lookup(el)
                if vid is not None:
                    out[key] = vid
        return out

    def inside(self, op_id: str, ancestor: str) -> bool:
        """Whether recorded operation ``op_id`` ran (directly or deeper) inside ``ancestor``."""
        ops = self.trace.operations
        cur = ops[op_id].parent if op_id in ops else None
        while cur is not None:
            if cur == ancestor:
                return True
            cur = ops[cur].parent if cur in ops else None
        return False

    def nested(self, op_id: str) -> list[str]:
        """Operations recorded inside ``op_id`` (at any depth), in the order they ended."""
        out: list[str] = []

        def walk(oid: str) -> None:
            for child in self.children.get(oid, ()):
                walk(child)
                out.append(child)

        walk(op_id)
        return out

    def inner_alias(self, value: Any, op_id: str) -> str | None:
        """The output of an operation nested in ``op_id`` that ``value`` is (by identity, else equality)."""
        vid = self.lookup(value)
        if vid is not None:
            prod = self.trace.variables[vid].producer
            if prod is not None and self.inside(prod, op_id):
                return vid
        for nested in reversed(self.nested(op_id)):
            op = self.trace.operations[nested]
            for out in reversed(op.outputs):
                try:
                    if type(self.trace.variables[out].value) is type(value) and bool(
                        self.trace.variables[out].value == value
                    ):
                        return out
                except Exception:
                    continue
        return None


class OperationScope:
    """An operation recorded with a ``with`` block.

    Obtain one from ``with tracer.operation("summarise", inputs={"notes": notes}) as op:``;
    call :meth:`set_output` with the result before the block ends. Without an active trace the
    scope records nothing.
    """

    def __init__(self, spec: OperationSpec, recording: _Recording | None, inputs: dict[str, Any]):
        self._spec = spec
        self._rec = recording
        self._inputs = inputs
        self._outputs: list[tuple[Any, str]] = []
        self._start = 0
        self._token: contextvars.Token[str | None] | None = None
        self.op: Operation | None = None

    def set_output(self, value: Any, name: str | None = None) -> Any:
        """Record ``value`` as an output of this operation and return it unchanged."""
        if name is None:
            k = len(self._outputs)
            name = self._spec.outputs[k] if k < len(self._spec.outputs) else f"{self._spec.name}.out"
        self._outputs.append((value, name))
        return value

    def __enter__(self) -> OperationScope:
        self._start = time.time_ns()
        if self._rec is not None:
            self._token = self._spec.tracer._current_op.set(self._spec.tracer._reserve_op_id(self._rec))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._rec is None:
            return
        tracer = self._spec.tracer
        assert self._token is not None
        op_id = tracer._current_op.get()
        tracer._current_op.reset(self._token)
        rec = self._rec
        with rec.lock:
            kwargs: dict[str, Slot] = {}
            inputs: list[str] = []
            params: dict[str, Any] = {}
            for pname, value in self._inputs.items():
                slot, param = tracer._slot_for(rec, pname, value, self._spec)
                kwargs[pname] = slot
                if slot.var is not None:
                    inputs.append(slot.var)
                elif param:
                    params[pname] = value
            outs = [rec.register(v, n, self._spec.output_kind) for v, n in self._outputs]
            meta: dict[str, Any] = {}
            if exc is not None:
                meta["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                outs.append(
                    rec.register(
                        {"error": repr(exc), "type": type(exc).__name__},
                        f"{self._spec.name}.error",
                        "error",
                        {"error": True},
                    )
                )
                rec.errors.setdefault(id(exc), outs[-1])
                rec.keep.append(exc)
            self.op = rec.trace.add_operation(
                self._spec.name,
                inputs,
                outs,
                kind=self._spec.kind,
                id=op_id,
                kwargs=kwargs,
                params=params,
                prompt=self._spec.prompt,
                model_id=self._spec.model_id,
                start_ns=self._start,
                end_ns=time.time_ns(),
                parent=self._token.old_value
                if self._token.old_value is not contextvars.Token.MISSING
                else None,
                error=None if exc is None else repr(exc),
                output_mode="single" if len(outs) <= 1 else "tuple",
                meta=meta,
            )
            if self.op.parent is not None:
                rec.children.setdefault(self.op.parent, []).append(self.op.id)


class OperationSpec:
    """What ``tracer.operation(...)`` returns: a decorator, or a ``with`` block.

    See :meth:`Tracer.operation` for the arguments.
    """

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        kind: str | None,
        outputs: Sequence[str],
        params: Sequence[str],
        ignore: Sequence[str],
        prompt: str | None,
        prompt_arg: str,
        model_id: str | None,
        output_kind: str,
        inputs: dict[str, Any] | None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TracingError(f"operation name must be a non-empty string, got {name!r}")
        self.tracer = tracer
        self.name = name
        self.kind = kind or name
        self.outputs = tuple(outputs)
        self.params = frozenset(params)
        self.ignore = frozenset(ignore)
        self.prompt = prompt
        self.prompt_arg = prompt_arg
        self.model_id = model_id
        self.output_kind = output_kind
        self.inputs = dict(inputs or {})
        self._scope: OperationScope | None = None

    # decorator use
    def __call__(self, fn: F) -> F:
        """Wrap ``fn`` so each call inside an active trace is recorded as this operation.

        A tracer that is disabled when the decorator runs returns ``fn`` itself: no wrapper,
        no cost at all.
        """
        tracer = self.tracer
        if not tracer.enabled:
            return fn
        active = tracer._active
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        spec = self

        if inspect.isgeneratorfunction(fn):
            # a streaming step: recorded from its first item to its last, its output the list
            # of what it yielded (a generator object would tell a reader and replay nothing)

            @functools.wraps(fn)
            def gwrapper(*args: Any, **kwargs: Any) -> Any:
                rec = active.get()
                if rec is None:
                    return (yield from fn(*args, **kwargs))
                call = tracer._begin(rec, spec, fn, sig, args, kwargs)
                tracer._current_op.reset(call.token)  # the consumer runs between items, outside it
                items: list[Any] = []

                gen = fn(*args, **kwargs)
                try:
                    while True:
                        token = tracer._current_op.set(call.op_id)  # steps it calls nest in it
                        try:
                            item = next(gen)
                        except StopIteration:
                            break
                        finally:
                            tracer._current_op.reset(token)
                        items.append(item)
                        yield item
                except GeneratorExit:  # the consumer stopped early: the output is what it got
                    gen.close()
                    tracer._end_stream(rec, call, items, None)
                    raise
                except BaseException as exc:
                    tracer._end_stream(rec, call, None, exc)
                    raise
                tracer._end_stream(rec, call, items, None)
                return None

            gwrapper.__memtrace_spec__ = spec  # type: ignore[attr-defined]
            return gwrapper  # type: ignore[return-value]

        if inspect.isasyncgenfunction(fn):  # the same for an async stream

            @functools.wraps(fn)
            async def agwrapper(*args: Any, **kwargs: Any) -> Any:
                rec = active.get()
                if rec is None:
                    async for item in fn(*args, **kwargs):
                        yield item
                    return
                call = tracer._begin(rec, spec, fn, sig, args, kwargs)
                tracer._current_op.reset(call.token)
                items: list[Any] = []

                agen = fn(*args, **kwargs)
                try:
                    while True:
                        token = tracer._current_op.set(call.op_id)
                        try:
                            item = await agen.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            tracer._current_op.reset(token)
                        items.append(item)
                        yield item
                except GeneratorExit:
                    await agen.aclose()
                    tracer._end_stream(rec, call, items, None)
                    raise
                except BaseException as exc:
                    tracer._end_stream(rec, call, None, exc)
                    raise
                tracer._end_stream(rec, call, items, None)

            agwrapper.__memtrace_spec__ = spec  # type: ignore[attr-defined]
            return agwrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                rec = active.get()
                if rec is None:
                    return await fn(*args, **kwargs)
                call = tracer._begin(rec, spec, fn, sig, args, kwargs)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    tracer._end(rec, call, None, exc)
                    raise
                tracer._end(rec, call, result, None)
                return result

            awrapper.__memtrace_spec__ = spec  # type: ignore[attr-defined]
            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rec = active.get()
            if rec is None:
                return fn(*args, **kwargs)
            call = tracer._begin(rec, spec, fn, sig, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                tracer._end(rec, call, None, exc)
                raise
            tracer._end(rec, call, result, None)
            return result

        wrapper.__memtrace_spec__ = spec  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    # context-manager use
    def __enter__(self) -> OperationScope:
        if self._scope is not None:
            raise TracingError(
                f"operation spec {self.name!r} is already open; call tracer.operation(...) again"
            )
        self._scope = OperationScope(self, self.tracer._active.get(), self.inputs)
        return self._scope.__enter__()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.__exit__(exc_type, exc, tb)


@dataclass
class _Call:
    op_id: str
    token: contextvars.Token[str | None]
    parent: str | None
    spec: OperationSpec
    fn: Callable[..., Any]
    args: list[Slot]
    kwargs: dict[str, Slot]
    arg_names: list[str | None]
    inputs: list[str]
    params: dict[str, Any]
    prompt: str | None
    model_id: str | None
    start: int
    watch: list[tuple[str, str, Any]] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    model: Any = None
    usage0: tuple[int, int] | None = None


class Tracer:
    """Records pipeline operations into evolution graphs.

    Args:
        enabled: When false, ``trace()`` yields None, nothing is recorded, and functions
            decorated while it is false are returned unwrapped (zero overhead).
        snapshot: ``"deepcopy"`` stores an immutable copy of each value; ``"reference"``
            stores the object itself (faster; only safe when steps never mutate their data).
        listeners: Objects told as the run happens (``on_trace_start(trace)``,
            ``on_op_start(trace, op_id, parent_id, name)``, ``on_op_end(trace, op)``,
            ``on_trace_end(trace)``), for example
            :class:`zjulab.memtrace.otel.LiveExporter` for live OpenTelemetry spans. A listener
            that raises is logged and never breaks the pipeline.

    Example:
        >>> tracer = Tracer()
        >>> @tracer.operation("double")
        ... def double(xs):
        ...     return tuple(2 * x for x in xs)
        >>> with tracer.trace() as t:
        ...     _ = double((1, 2))
        >>> t.final_value
        (2, 4)
    """

    def __init__(
        self, enabled: bool = True, *, snapshot: str = "deepcopy", listeners: Sequence[Any] = ()
    ) -> None:
        if snapshot not in ("deepcopy", "reference"):
            raise TracingError(f"snapshot must be 'deepcopy' or 'reference', got {snapshot!r}")
        self.enabled = enabled
        self.snapshot = snapshot
        self.listeners: list[Any] = list(listeners)
        uid = next(_tracer_ids)
        self._active: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar(
            f"memtrace_active_{uid}", default=None
        )
        self._current_op: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"memtrace_op_{uid}", default=None
        )

    # ------------------------------------------------------------------ recording scope
    @contextlib.contextmanager
    def trace(self, name: str = "trace", **metadata: Any) -> Iterator[Trace | None]:
        """Record every decorated call made inside the block (in this thread / task).

        Args:
            name: Trace name.
            **metadata: Stored in ``trace.metadata``.

        Yields:
            The trace being recorded, or None when the tracer is disabled.
        """
        if not self.enabled:
            yield None
            return
        rec = _Recording(Trace(name, metadata), self.snapshot)
        token = self._active.set(rec)
        op_token = self._current_op.set(None)
        self._notify("on_trace_start", rec.trace)
        try:
            yield rec.trace
        finally:
            self._current_op.reset(op_token)
            self._active.reset(token)
            self._notify("on_trace_end", rec.trace)

    def _notify(self, event: str, *args: Any) -> None:
        for listener in self.listeners:
            fn = getattr(listener, event, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as exc:
                from zjulab.memtrace.redaction import DEFAULT_REDACTOR

                # the message may quote a traced value: it leaves the process redacted
                logger.warning(
                    "memtrace listener %s.%s failed: %s",
                    type(listener).__name__,
                    event,
                    DEFAULT_REDACTOR.text(f"{type(exc).__name__}: {exc}"),
                )

    def current(self) -> Trace | None:
        """The trace being recorded in this context, if any."""
        rec = self._active.get()
        return None if rec is None else rec.trace

    # ------------------------------------------------------------------ public helpers
    def operation(
        self,
        name: str,
        kind: str | None = None,
        *,
        outputs: Sequence[str] = (),
        params: Sequence[str] = (),
        ignore: Sequence[str] = ("self", "cls"),
        prompt: str | None = None,
        prompt_arg: str = "prompt",
        model_id: str | None = None,
        output_kind: str = "data",
        inputs: dict[str, Any] | None = None,
    ) -> OperationSpec:
        """Declare an operation, as a decorator or a ``with`` block.

        Args:
            name: Step name (``"extract"``).
            kind: Step kind for failure-mode defaults (defaults to ``name``).
            outputs: Output variable names. With two or more names a returned tuple of that
                length is split into one variable each; with one name, or none
                (``"<name>.out"``), the return value is one variable.
            params: Argument names always recorded as constants (never as variables).
            ignore: Argument names recorded as constants and left out of ``params`` views.
            prompt: The prompt template, if it is not an argument.
            prompt_arg: Name of the argument holding the prompt (recorded as ``op.prompt``
                and patchable in replay).
            model_id: Model id; otherwise taken from a constant argument's ``model_id``.
            output_kind: ``kind`` label of the output variables.
            inputs: For ``with`` use only: the named input values.

        Returns:
            An :class:`OperationSpec`.
        """
        return OperationSpec(
            self, name, kind, outputs, params, ignore, prompt, prompt_arg, model_id, output_kind, inputs
        )

    def variable(self, value: Any, name: str, kind: str = "data") -> Any:
        """Record ``value`` as a source variable and return it unchanged.

        Later steps that receive this very object get an edge from it. Outside an active
        trace, nothing happens.
        """
        rec = self._active.get()
        if rec is not None:
            rec.register(value, name, kind)
        return value

    # ------------------------------------------------------------------ internals
    def _reserve_op_id(self, rec: _Recording) -> str:
        # ids come from a monotonic counter, so an id handed out here is never reused
        return rec.trace.new_id("op")

    def _slot_for(
        self, rec: _Recording, pname: str, value: Any, spec: OperationSpec, *, default: bool = False
    ) -> tuple[Slot, bool]:
        """Return the slot for one argument and whether it is a user-visible parameter."""
        if default:  # a default value is a constant of the function, never a data link
            const = _snapshot(value, rec.snapshot) if isinstance(value, _DATA_TYPES) else value
            return Slot(const=const), pname not in spec.ignore
        vid = rec.lookup(value)
        if vid is not None:
            return Slot(var=vid), False
        if pname in spec.ignore:
            return Slot(const=value), False
        if pname in spec.params or pname == spec.prompt_arg or isinstance(value, _SCALARS):
            # data constants are snapshots too, so a later mutation never rewrites the trace
            const = _snapshot(value, rec.snapshot) if isinstance(value, _DATA_TYPES) else value
            return Slot(const=const), True
        if isinstance(value, _DATA_TYPES):
            sources = rec.derived_from(value)
            meta: dict[str, Any] | None = {"derived_from": sources} if sources else None
            parts = rec.parts_of(value)
            if parts and meta is not None:
                meta["parts"] = parts  # replay rebuilds the container from the new values
            return Slot(var=rec.register(value, pname, "source", meta)), False
        return Slot(const=value), False

    def _begin(
        self,
        rec: _Recording,
        spec: OperationSpec,
        fn: Callable[..., Any],
        sig: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _Call:
        names: list[str | None] = [None] * len(args)
        if sig is not None:
            plist = list(sig.parameters.values())
            for i in range(len(args)):
                if i < len(plist) and plist[i].kind in (
                    inspect.Parameter.POSITIONAL_ONLY,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                ):
                    names[i] = plist[i].name
                elif i < len(plist) and plist[i].kind is inspect.Parameter.VAR_POSITIONAL:
                    names[i:] = [f"{plist[i].name}[{j}]" for j in range(len(args) - i)]
                    break
        inputs: list[str] = []
        params: dict[str, Any] = {}
        model_id = spec.model_id
        prompt = spec.prompt
        rec.literals = _caller_literals(3)
        with rec.lock:
            aslots: list[Slot] = []
            for i, value in enumerate(args):
                pname = names[i] or f"arg{i}"
                slot, is_param = self._slot_for(rec, pname, value, spec)
                aslots.append(slot)
                if slot.var is not None:
                    inputs.append(slot.var)
                elif is_param:
                    params[pname] = value
                if model_id is None and slot.var is None:
                    model_id = _model_id_of(value)
            kslots: dict[str, Slot] = {}
            for pname, value in kwargs.items():
                slot, is_param = self._slot_for(rec, pname, value, spec)
                kslots[pname] = slot
                if slot.var is not None:
                    inputs.append(slot.var)
                elif is_param:
                    params[pname] = value
                if model_id is None and slot.var is None:
                    model_id = _model_id_of(value)
            if sig is not None:
                # defaults the call left out are recorded too, so they show and can be patched
                given = {n for n in names[: len(args)] if n} | set(kwargs)
                for p in sig.parameters.values():
                    if (
                        p.name in given
                        or p.default is inspect.Parameter.empty
                        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                        or p.kind is inspect.Parameter.POSITIONAL_ONLY
                    ):
                        continue
                    slot, is_param = self._slot_for(rec, p.name, p.default, spec, default=True)
                    kslots[p.name] = slot
                    if is_param:
                        params[p.name] = p.default
            if spec.prompt_arg in params and isinstance(params[spec.prompt_arg], str):
                prompt = params[spec.prompt_arg]
            rec.literals = ()
            # a container built from recorded values (``hits + facts[:1]``) reads them all
            reads: list[str] = []
            for slot in [*aslots, *kslots.values()]:
                if slot.var is not None:
                    reads.extend(rec.trace.variables[slot.var].meta.get("derived_from", []))
            inputs.extend(r for r in reads if r not in inputs)
            # recorded mutable arguments are watched for in-place changes
            watch: list[tuple[str, Any, Any]] = []
            if rec.snapshot == "deepcopy":
                for key, slot, value in [
                    *((str(i), sl, v) for i, (sl, v) in enumerate(zip(aslots, args))),
                    *((k, kslots[k], v) for k, v in kwargs.items()),
                ]:
                    if slot.var is not None and isinstance(value, (list, dict, set)):
                        watch.append((key, slot.var, value))
            op_id = rec.trace.new_id("op")
        parent = self._current_op.get()
        token = self._current_op.set(op_id)
        model = next((v for v in [*args, *kwargs.values()] if _usage_of(v) is not None), None)
        if self.listeners:
            self._notify("on_op_start", rec.trace, op_id, parent, spec.name)
        return _Call(
            op_id,
            token,
            parent,
            spec,
            fn,
            aslots,
            kslots,
            names,
            inputs,
            params,
            prompt,
            model_id,
            time.time_ns(),
            watch,
            reads,
            model,
            _usage_of(model) if model is not None else None,
        )

    def _end_stream(self, rec: _Recording, call: _Call, result: Any, exc: BaseException | None) -> None:
        """End a generator step: its context was reset between items, so enter it again first."""
        call.token = self._current_op.set(call.op_id)
        self._end(rec, call, result, exc)

    def _end(self, rec: _Recording, call: _Call, result: Any, exc: BaseException | None) -> None:
        end = time.time_ns()
        self._current_op.reset(call.token)
        spec = call.spec
        with rec.lock:
            outs: list[str] = []
            mode = "single"
            meta: dict[str, Any] = {}
            if exc is None:
                if len(spec.outputs) > 1 and isinstance(result, tuple) and len(result) == len(spec.outputs):
                    outs = [rec.register(v, n, spec.output_kind) for v, n in zip(result, spec.outputs)]
                    mode = "tuple"
                else:
                    name = spec.outputs[0] if spec.outputs else f"{spec.name}.out"
                    alias = rec.inner_alias(result, call.op_id)
                    outs = [
                        rec.register(result, name, spec.output_kind, {"alias_of": alias} if alias else None)
                    ]
            else:
                # a crash is a failure: its output is an error record (innermost raise first)
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                meta["traceback"] = tb
                inner = rec.errors.get(id(exc))
                record = {"error": repr(exc), "type": type(exc).__name__}
                vmeta: dict[str, Any] = {"error": True}
                if inner is not None and rec.inside(rec.trace.variables[inner].producer or "", call.op_id):
                    vmeta["alias_of"] = inner
                outs = [rec.register(record, f"{spec.name}.error", "error", vmeta)]
                rec.errors.setdefault(id(exc), outs[0])
                rec.keep.append(exc)
            mutated: dict[str, str] = {}
            for key, vid, value in call.watch:
                old = rec.trace.variables[vid]
                try:
                    same = bool(old.value == value)
                except Exception:
                    same = True
                latest = rec.lookup(value)
                if not same and latest is not None and latest != vid:
                    # a step nested in this one already recorded the change (``add`` calling
                    # ``update``): later readers link to that step, not to the wrapper
                    prod = rec.trace.variables[latest].producer
                    if prod is not None and rec.inside(prod, call.op_id):
                        try:
                            same = bool(rec.trace.variables[latest].value == value)
                        except Exception:
                            same = False
                if not same:
                    new = rec.register(value, old.name, old.kind)
                    outs.append(new)
                    mutated[new] = key
            if mutated:
                meta["mutates"] = mutated
                if mode == "tuple":
                    meta["returned"] = len(outs) - len(mutated)
            if call.reads:
                meta["reads"] = list(dict.fromkeys(call.reads))
            if call.model is not None and call.usage0 is not None:
                now = _usage_of(call.model)
                if now is not None:
                    meta["usage"] = {
                        "input_tokens": now[0] - call.usage0[0],
                        "output_tokens": now[1] - call.usage0[1],
                    }
                provider = getattr(call.model, "provider", None)
                if isinstance(provider, str):
                    meta["provider"] = provider
            op = rec.trace.add_operation(
                spec.name,
                list(dict.fromkeys(call.inputs)),
                outs,
                kind=spec.kind,
                id=call.op_id,
                handle=call.fn,
                args=call.args,
                kwargs=call.kwargs,
                arg_names=call.arg_names,
                params=call.params,
                prompt=call.prompt,
                model_id=call.model_id,
                start_ns=call.start,
                end_ns=end,
                handle_ref=_handle_ref(call.fn),
                parent=call.parent,
                error=None if exc is None else repr(exc),
                output_mode=mode,
                meta=meta,
            )
            if call.parent is not None:
                rec.children.setdefault(call.parent, []).append(op.id)
        if self.listeners:
            self._notify("on_op_end", rec.trace, op)


def _usage_of(value: Any) -> tuple[int, int] | None:
    usage = getattr(value, "usage", None)
    p, c = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    if isinstance(p, int) and isinstance(c, int):
        return p, c
    return None


def _model_id_of(value: Any) -> str | None:
    mid = getattr(value, "model_id", None)
    return mid if isinstance(mid, str) else None
