"""Save and load traces as versioned JSON.

The file holds ``{"schema": "zjulab.memtrace.trace", "version": 1, ...}`` with every variable
and operation. Values that JSON cannot represent are stored as ``{"__repr__": "..."}`` with a
warning and the variable is marked ``serializable: false``. Writes are atomic (the whole
document is serialised first, then written to a temporary file and moved into place), so a
failure never leaves a torn trace file. Redaction (on by default) runs before anything is written.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from zjulab.common.errors import StoreError
from zjulab.common.io import read_json, write_json
from zjulab.memtrace.errors import (
    CycleError,
    DanglingVariableError,
    MemTraceError,
    TraceFileError,
    TraceSchemaError,
)
from zjulab.memtrace.graph import Slot, Trace
from zjulab.memtrace.redaction import DEFAULT_REDACTOR, RedactFn, apply_redaction, redact_text

__all__ = ["SCHEMA", "SCHEMA_VERSION", "load_trace", "save_trace", "trace_from_dict", "trace_to_dict"]

logger = logging.getLogger(__name__)

SCHEMA = "zjulab.memtrace.trace"
_SURROGATE = re.compile("[\ud800-\udfff]")
SCHEMA_VERSION = 1


def _encode(value: Any, where: str) -> tuple[Any, bool]:
    """Return a JSON-safe form of ``value`` and whether it is lossless.

    Lossless means that reading the JSON back gives a value equal to the original: a tuple
    (read back as a list), a dict with non-string keys or a subclass of a JSON type is stored
    in its JSON form but reported as lossy; anything JSON cannot hold (sets, dataclasses,
    objects, NaN) is stored as ``{"__repr__": ...}``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        logger.warning("%s: %s value is not JSON-serialisable; stored by repr", where, type(value).__name__)
        return {"__repr__": DEFAULT_REDACTOR.text(repr(value))}, False
    if _SURROGATE.search(text):  # not writable as UTF-8: replaced, and marked lossy
        logger.warning("%s: lone surrogates in a string; replaced by U+FFFD and marked lossy", where)
        return json.loads(_SURROGATE.sub("\ufffd", text)), False
    back = json.loads(text)
    if not _same(back, value):
        logger.warning("%s: %s value changes type through JSON; marked lossy", where, type(value).__name__)
        return back, False
    return back, True


def _lossless(value: Any) -> bool:
    try:
        return _same(json.loads(json.dumps(value, allow_nan=False)), value)
    except (TypeError, ValueError):
        return False


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _slot_dict(slot: Slot, where: str) -> dict[str, Any]:
    if slot.var is not None:
        return {"var": slot.var}
    enc, ok = _encode(slot.const, where)
    return {"const": enc} if ok else {"const": enc, "lossy": True}


def trace_to_dict(trace: Trace, *, redact: RedactFn | None = DEFAULT_REDACTOR) -> dict[str, Any]:
    """The JSON document of a trace, every string redacted (``redact=None`` turns it off)."""
    variables = []
    for v in trace.variables.values():
        value, ok = _encode(apply_redaction(v.value, redact), f"variable {v.id} ({v.label})")
        variables.append(
            {
                "id": v.id,
                "name": v.name,
                "version": v.version,
                "kind": v.kind,
                "value": value,
                "producer": v.producer,
                "serializable": v.serializable and ok and _lossless(v.value),
                "created_ns": v.created_ns,
                "meta": _encode(apply_redaction(v.meta, redact), f"variable {v.id} meta")[0],
            }
        )
    operations = []
    for op in trace.operations.values():
        where = f"operation {op.id} ({op.name})"
        operations.append(
            {
                "id": op.id,
                "name": op.name,
                "kind": op.kind,
                "inputs": op.inputs,
                "outputs": op.outputs,
                "params": {k: _encode(apply_redaction(v, redact), where)[0] for k, v in op.params.items()},
                "prompt": apply_redaction(op.prompt, redact),
                "model_id": None if op.model_id is None else redact_text(op.model_id, redact),
                "start_ns": op.start_ns,
                "end_ns": op.end_ns,
                "handle_ref": op.handle_ref,
                "parent": op.parent,
                "error": None if op.error is None else redact_text(op.error, redact),
                "args": [_slot_dict(_redact_slot(s, redact), where) for s in op.args],
                "kwargs": {k: _slot_dict(_redact_slot(s, redact), where) for k, s in op.kwargs.items()},
                "arg_names": op.arg_names,
                "output_mode": op.output_mode,
                "meta": _encode(apply_redaction(op.meta, redact), f"{where} meta")[0],
            }
        )
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "id": trace.id,
        "name": redact_text(trace.name, redact),
        "metadata": _encode(apply_redaction(trace.metadata, redact), "trace metadata")[0],
        "final": trace.final,
        "variables": variables,
        "operations": operations,
    }


def _redact_slot(slot: Slot, redact: RedactFn | None) -> Slot:
    if slot.var is not None or redact is None:
        return slot
    return Slot(const=redact(slot.const))


def save_trace(
    trace: Trace, path: str | os.PathLike[str], *, redact: RedactFn | None = DEFAULT_REDACTOR
) -> Path:
    """Write ``trace`` to ``path`` as JSON, atomically.

    Args:
        trace: The trace.
        path: Target file.
        redact: Redaction applied to every value, parameter, prompt, error and traceback
            first; on by default (:data:`~zjulab.memtrace.redaction.DEFAULT_REDACTOR`), ``None``
            turns it off.

    Returns:
        The path written.

    Raises:
        OutputExistsError: ``path`` is a folder or a file this library did not write (a
            user's file is never replaced).
    """
    from zjulab.memtrace.outputs import check_replaceable, utf8_safe

    check_replaceable(path)
    doc = utf8_safe(trace_to_dict(trace, redact=redact))
    write_json(path, doc)
    return Path(path)


def _need(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise TraceFileError(f"{where}: missing field {key!r}")
    return doc[key]


_NS = Annotated[StrictInt, Field(ge=0, lt=2**63)]
_Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _VarMeta(_Doc):
    model_config = ConfigDict(extra="allow", frozen=True)
    alias_of: _Id | None = None
    error: StrictBool = False
    derived_from: list[_Id] = []
    parts: dict[StrictStr, _Id] = {}


class _OpMeta(_Doc):
    model_config = ConfigDict(extra="allow", frozen=True)
    mutates: dict[_Id, Annotated[StrictStr, Field(min_length=1)]] = {}
    reads: list[_Id] = []
    returned: Annotated[StrictInt, Field(ge=0)] | None = None
    traceback: StrictStr = ""
    provider: StrictStr | None = None
    usage: dict[StrictStr, StrictInt] = {}


class _SlotDoc(_Doc):
    var: _Id | None = None
    const: Any = None
    lossy: StrictBool = False


class _VariableDoc(_Doc):
    id: _Id
    name: Annotated[StrictStr, Field(min_length=1)]
    version: Annotated[StrictInt, Field(ge=0)] | None = None
    kind: StrictStr = "data"
    value: Any = None
    producer: _Id | None = None
    serializable: StrictBool = True
    created_ns: _NS = 0
    meta: _VarMeta = _VarMeta()


class _OperationDoc(_Doc):
    id: _Id
    name: Annotated[StrictStr, Field(min_length=1)]
    kind: StrictStr | None = None
    inputs: list[_Id] = []
    outputs: list[_Id] = []
    params: dict[StrictStr, Any] = {}
    prompt: StrictStr | None = None
    model_id: StrictStr | None = None
    start_ns: _NS = 0
    end_ns: _NS = 0
    handle_ref: StrictStr | None = None
    parent: _Id | None = None
    error: StrictStr | None = None
    args: list[_SlotDoc] = []
    kwargs: dict[StrictStr, _SlotDoc] = {}
    arg_names: list[StrictStr | None] | None = None
    output_mode: Literal["single", "tuple"] = "single"
    meta: _OpMeta = _OpMeta()


class _TraceDoc(_Doc):
    id: _Id | None = None
    name: StrictStr = "trace"
    metadata: dict[StrictStr, Any] = {}
    final: _Id | None = None
    variables: list[_VariableDoc]
    operations: list[_OperationDoc]


MAX_DEPTH = 128
"""Deepest nesting of lists and objects a file may hold (every reader walks values recursively)."""


def check_depth(doc: Any, source: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a document nested deeper than ``limit`` (``TraceFileError`` naming the field).

    Checked without recursion, so a hostile file cannot exhaust the stack here or later in
    redaction, rendering or attribution.
    """
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(doc, 0, ())]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            items: Any = ((str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            items = ((str(i), v) for i, v in enumerate(value))
        else:
            continue
        if depth >= limit:
            field = ".".join(where[:6]) + (".…" if len(where) > 6 else "")
            raise TraceFileError(
                f"{source}: field {field or '<document>'}: nested deeper than {limit} levels"
            )
        for k, v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1, (*where, k)))


def read_untrusted_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file someone else may have written; every failure is a ``TraceFileError``."""
    try:
        doc = read_json(path)
    except StoreError as exc:
        raise TraceFileError(str(exc)) from exc
    except RecursionError:
        raise TraceFileError(f"{path}: nested too deeply to read") from None
    except MemoryError:
        raise TraceFileError(f"{path}: too large to read into memory") from None
    check_depth(doc, str(path))
    return doc


def _validate(doc: Mapping[str, Any], source: str) -> _TraceDoc:
    """Check every field's type before anything is built (a file is untrusted input)."""
    try:
        return _TraceDoc.model_validate(dict(doc))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<document>"
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise TraceFileError(f"{source}: field {where}: {err['msg']} (got {got}){more}") from None


def _check_parents(trace: Trace, source: str) -> None:
    """Refuse nesting that loops (an operation inside itself through its parents)."""
    for op in trace.operations.values():
        seen = {op.id}
        cur = op.parent
        while cur is not None:
            if cur in seen:
                raise TraceFileError(f"{source}: operation {op.id} is nested inside itself")
            seen.add(cur)
            cur = trace.operations[cur].parent


def trace_from_dict(
    doc: Mapping[str, Any],
    *,
    handles: Mapping[str, Callable[..., Any]] | None = None,
    source: str = "<dict>",
    trust_handles: bool = False,
    allow_modules: Sequence[str] = (),
) -> Trace:
    """Rebuild a trace from its JSON document, checking ids and acyclicity.

    Args:
        doc: The document.
        handles: Callables to re-attach, keyed by operation id, ``module:qualname`` or
            operation name (tried in that order).
        source: Name used in error messages.
        trust_handles: Follow the file's ``handle_ref`` names (off by default: a trace file is
            data and loading it never imports or calls anything).
        allow_modules: With ``trust_handles``: the only modules whose registered operations
            may be re-bound.

    Returns:
        The trace.

    Raises:
        TraceSchemaError: A newer or unknown schema.
        TraceFileError: A field is missing or malformed.
        DanglingVariableError: An operation names a variable that is not in the file.
        CycleError: The operations form a cycle.
    """
    if not isinstance(doc, Mapping):
        raise TraceFileError(f"{source}: a trace file holds a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise TraceSchemaError(f"{source}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TraceSchemaError(f"{source}: bad schema version {version!r}")
    if version > SCHEMA_VERSION:
        raise TraceSchemaError(
            f"{source}: written by a newer zjulab-memtrace (schema version {version}; this one reads <= {SCHEMA_VERSION})"
        )
    check_depth(doc, source)
    checked = _validate(doc, source)
    trace = Trace(checked.name, dict(checked.metadata), id=checked.id)
    try:
        for v in checked.variables:
            trace.add_variable(
                v.name,
                v.value,
                kind=v.kind,
                id=v.id,
                version=v.version,
                serializable=v.serializable,
                created_ns=v.created_ns,
                meta=v.meta.model_dump(exclude_unset=True),
            )
        for v in checked.variables:
            for ref in [*v.meta.parts.values(), *v.meta.derived_from]:
                if ref not in trace.variables:
                    raise DanglingVariableError(
                        f"{source}: variable {v.id} is built from unknown variable {ref!r}"
                    )
        op_ids = {o.id for o in checked.operations}
        for o in checked.operations:
            ometa = o.meta.model_dump(exclude_unset=True)
            args = [Slot(var=s.var, const=s.const) for s in o.args]
            kwargs = {k: Slot(var=s.var, const=s.const) for k, s in o.kwargs.items()}
            for s in [*args, *kwargs.values()]:
                if s.var is not None and s.var not in trace.variables:
                    raise DanglingVariableError(
                        f"{source}: operation {o.id} argument refers to unknown variable {s.var!r}"
                    )
            bound = {s.var for s in [*args, *kwargs.values()] if s.var is not None}
            declared = set(o.inputs)
            reads = set(ometa.get("reads") or [])
            if (args or kwargs or declared) and declared != bound | reads:
                raise TraceFileError(
                    f"{source}: operation {o.id} lists inputs {sorted(declared)} but its arguments "
                    f"bind {sorted(bound)}; a file whose inputs disagree with its arguments is refused"
                )
            if o.parent is not None and (o.parent not in op_ids or o.parent == o.id):
                raise TraceFileError(f"{source}: operation {o.id} names an unknown parent {o.parent!r}")
            for vid, key in (ometa.get("mutates") or {}).items():
                in_range = key.isdigit() and int(key) < len(args)
                if vid not in o.outputs or not (in_range or key in kwargs):
                    raise TraceFileError(
                        f"{source}: operation {o.id} says it changed {vid!r} through argument {key!r}, "
                        "which is not one of its outputs and arguments"
                    )
            trace.add_operation(
                o.name,
                o.inputs,
                o.outputs,
                kind=o.kind or o.name,
                id=o.id,
                params=dict(o.params),
                prompt=o.prompt,
                model_id=o.model_id,
                start_ns=o.start_ns,
                end_ns=o.end_ns,
                handle_ref=o.handle_ref,
                parent=o.parent,
                error=o.error,
                args=args,
                kwargs=kwargs,
                arg_names=list(o.arg_names if o.arg_names is not None else [None] * len(args)),
                output_mode=o.output_mode,
                meta=ometa,
            )
        _check_parents(trace, source)
    except (TraceFileError, TraceSchemaError):
        raise
    except MemTraceError as exc:  # the graph refused the file's content: name the file
        msg = str(exc.args[0]) if exc.args else str(exc)
        if msg.startswith(source):
            raise
        if isinstance(exc, (CycleError, DanglingVariableError)):
            raise type(exc)(f"{source}: {msg}") from None
        raise TraceFileError(f"{source}: {msg}") from None
    except (KeyError, TypeError, ValueError) as exc:  # pragma: no cover - the schema catches these
        raise TraceFileError(f"{source}: malformed trace ({type(exc).__name__}: {exc})") from exc
    if checked.final is not None:
        if checked.final not in trace.variables:
            raise DanglingVariableError(f"{source}: final variable {checked.final!r} is not in the file")
        trace.final = checked.final
    attach_handles(trace, handles or {}, trust_handles=trust_handles, allow_modules=allow_modules)
    return trace


def _module_allowed(module: str, allow_modules: Sequence[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in allow_modules if m)


def attach_handles(
    trace: Trace,
    handles: Mapping[str, Callable[..., Any]],
    *,
    trust_handles: bool = False,
    allow_modules: Sequence[str] = (),
) -> int:
    """Attach callables to a trace's operations; returns how many operations got one.

    ``handles`` (keyed by operation id, ``module:qualname`` or operation name) come from the
    caller's own code. A ``handle_ref`` written in the file is only followed when
    ``trust_handles`` is true, its module is in ``allow_modules`` (or below one of them), and
    the object it names is a function registered with ``@tracer.operation`` under the same
    operation name; nothing else in a file is ever imported or called.
    """
    if trust_handles and not any(allow_modules):
        raise TraceFileError(
            "trust_handles needs allow_modules: the modules whose registered operations may be re-bound"
        )
    n = 0
    for op in trace.operations.values():
        fn = (
            handles.get(op.id)
            or (handles.get(op.handle_ref) if op.handle_ref else None)
            or handles.get(op.name)
        )
        if fn is None and trust_handles and op.handle_ref:
            fn = _import_ref(op.handle_ref, op.name, allow_modules)
        if fn is not None:
            trace.handles[op.id] = fn
            n += 1
    return n


def _import_ref(ref: str, op_name: str, allow_modules: Sequence[str]) -> Callable[..., Any] | None:
    mod, _, qual = ref.partition(":")
    parts = qual.split(".")
    if not mod or not qual or not all(p.isidentifier() and not p.startswith("_") for p in parts):
        logger.warning("handle_ref %r is not a public module:qualname; not re-bound", ref)
        return None
    if not all(p.isidentifier() for p in mod.split(".")) or not _module_allowed(mod, allow_modules):
        logger.warning("handle_ref %r: module %r is not in allow_modules; not re-bound", ref, mod)
        return None
    try:
        obj: Any = importlib.import_module(mod)
        for part in parts:
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    spec = getattr(obj, "__memtrace_spec__", None)
    if spec is None or getattr(spec, "name", None) != op_name:
        logger.warning(
            "handle_ref %r does not name an operation registered as %r; not re-bound", ref, op_name
        )
        return None
    obj = getattr(obj, "__wrapped__", obj)
    return obj if callable(obj) else None


def load_trace(
    path: str | os.PathLike[str],
    *,
    handles: Mapping[str, Callable[..., Any]] | None = None,
    trust_handles: bool = False,
    allow_modules: Sequence[str] = (),
) -> Trace:
    """Read a trace written by :func:`save_trace`.

    A trace file is untrusted data: loading it imports and calls nothing unless
    ``trust_handles`` is true, and then only operations registered with ``@tracer.operation``
    in ``allow_modules``.

    Args:
        path: The file.
        handles: Callables to re-attach for replay (see :func:`trace_from_dict`).
        trust_handles: Re-bind the file's ``handle_ref`` names (see :func:`attach_handles`).
        allow_modules: Modules allowed for ``trust_handles``.

    Returns:
        The trace.

    Raises:
        TraceFileError: Missing file, invalid JSON or malformed content.
        TraceSchemaError: Written by a newer schema version.
    """
    doc = read_untrusted_json(path)
    return trace_from_dict(
        doc, handles=handles, source=str(path), trust_handles=trust_handles, allow_modules=allow_modules
    )
