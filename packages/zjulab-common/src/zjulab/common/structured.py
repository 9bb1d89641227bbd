"""Get data that matches a schema out of a chat model's free text.

Models wrap JSON in prose and code fences, leave trailing commas, use Python literals, single
quotes, or stop mid-object when they run out of tokens. :func:`parse_structured` extracts the
JSON, repairs the common breakage and validates it against a schema (a dataclass, a pydantic
model, or ``dict``/``list``). :func:`generate_structured` asks a :class:`ChatModel` and, when the
answer does not parse, re-asks with the error up to ``max_retries`` times before raising
:class:`~zjulab.common.errors.StructuredOutputError` (carrying the raw text).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, Union

from zjulab.common.errors import ConfigError, StructuredOutputError
from zjulab.common.protocols import ChatModel, Conversation

__all__ = [
    "extract_json",
    "generate_structured",
    "parse_json",
    "parse_structured",
    "repair_json",
    "schema_prompt",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FENCE = re.compile(r"```(?:json|JSON|javascript|js)?\s*\n?(.*?)(?:```|$)", re.DOTALL)


def _string_mask(text: str, quotes: str = '"') -> tuple[list[bool], bool]:
    """Mark the characters of ``text`` that belong to a string literal (quotes included).

    Returns:
        The per-character mask and whether a string is still open at the end.
    """
    mask: list[bool] = []
    quote: str | None = None
    esc = False
    for c in text:
        if quote is not None:
            mask.append(True)
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == quote:
                quote = None
        else:
            mask.append(c in quotes)
            if c in quotes:
                quote = c
    return mask, quote is not None


def _balanced_span(text: str, start: int) -> int | None:
    """End index (exclusive) of the JSON value opening at ``text[start]``, or None if unclosed."""
    stack: list[str] = []
    mask, _ = _string_mask(text[start:], "\"'")
    for i, (c, quoted) in enumerate(zip(text[start:], mask), start):
        if quoted:
            continue
        if c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack[-1] != c:
                return None
            stack.pop()
            if not stack:
                return i + 1
    return None


def extract_json(text: str) -> str:
    """Return the most plausible JSON fragment in ``text``.

    Order of preference: the content of a fenced code block that holds an object or array; the
    first balanced ``{...}`` or ``[...]``; the text from the first ``{``/``[`` to the end (a
    truncated answer, left for :func:`repair_json`); the stripped text itself.
    """
    for m in _FENCE.finditer(text):
        inner = m.group(1).strip()
        if inner[:1] in "{[":
            return inner
    starts = [i for i, c in enumerate(text) if c in "{["]
    for s in starts:
        end = _balanced_span(text, s)
        if end is not None:
            return text[s:end]
    if starts:
        return text[starts[0] :].strip()
    return text.strip()


_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _tokens_outside_strings(text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the runs of ``text`` that are outside double-quoted strings."""
    mask, _ = _string_mask(text)
    out: list[str] = []
    for quoted, run in itertools.groupby(zip(text, mask), key=lambda cm: cm[1]):
        chunk = "".join(c for c, _ in run)
        out.append(chunk if quoted else fn(chunk))
    return "".join(out) if text else fn("")


def _single_to_double(text: str) -> str:
    """Turn single-quoted strings into double-quoted ones (outside double-quoted strings)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_double = False
    while i < n:
        c = text[i]
        if in_double:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_double = False
            i += 1
            continue
        if c == '"':
            in_double = True
            out.append(c)
            i += 1
            continue
        if c == "'":
            j = i + 1
            chunk: list[str] = []
            while j < n and text[j] != "'":
                if text[j] == "\\" and j + 1 < n:
                    chunk.append(text[j : j + 2])
                    j += 2
                    continue
                chunk.append('\\"' if text[j] == '"' else text[j])
                j += 1
            out.append('"' + "".join(chunk) + '"')
            i = j + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _close_truncated(text: str) -> str:
    """Close an unterminated string and any open brackets of a truncated JSON value."""
    stack: list[str] = []
    mask, open_string = _string_mask(text)
    for c, quoted in zip(text, mask):
        if quoted:
            continue
        if c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]" and stack and stack[-1] == c:
            stack.pop()
    if open_string:
        text += '"'
    text = text.rstrip()
    # drop a dangling key or separator before closing
    text = re.sub(r",\s*$", "", text)
    text = re.sub(r'(\{|,)\s*"[^"]*"\s*:?\s*$', r"\1", text) if stack and stack[-1] == "}" else text
    text = re.sub(r":\s*$", ": null", text)
    text = re.sub(r",\s*$", "", text)
    return text + "".join(reversed(stack))


def repair_json(text: str) -> str:
    """Fix the usual breakage in model-written JSON.

    Handles: ``//`` and ``/* */`` comments, Python literals (``True``/``False``/``None``),
    single-quoted strings, unquoted object keys, trailing commas, and truncation (an open string
    or open brackets at the end are closed; a dangling key is dropped).
    """
    s = text.strip()
    s = _single_to_double(s)

    def fix(chunk: str) -> str:
        chunk = re.sub(r"//[^\n]*", "", chunk)
        chunk = re.sub(r"/\*.*?\*/", "", chunk, flags=re.DOTALL)
        chunk = re.sub(r"\b(True|False|None)\b", lambda m: _PY_LITERALS[m.group(1)], chunk)
        chunk = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_\-]*)(\s*:)", r'\1"\2"\3', chunk)
        chunk = re.sub(r",(\s*[}\]])", r"\1", chunk)
        return chunk

    s = _tokens_outside_strings(s, fix)
    s = _close_truncated(s)
    s = _tokens_outside_strings(s, lambda c: re.sub(r",(\s*[}\]])", r"\1", c))
    return s


def parse_json(text: str) -> Any:
    """Parse the JSON in a model answer, repairing it when needed.

    Raises:
        StructuredOutputError: No JSON value could be recovered.
    """
    fragment = extract_json(text)
    try:
        return json.loads(fragment)
    except json.JSONDecodeError:
        pass
    repaired = repair_json(fragment)
    try:
        return json.loads(repaired)
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(
            f"no valid JSON in the answer ({exc.msg} at column {exc.colno} after repair)", raw=text
        ) from exc


def _norm_key(k: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(k).lower())


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and hasattr(schema, "model_validate") and hasattr(schema, "model_fields")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Coerce ``value`` into type ``tp`` (dataclasses, containers, Literal, Optional, scalars)."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except StructuredOutputError as exc:
                errors.append(str(exc))
        raise StructuredOutputError(f"{path}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is Literal:
        if value in args:
            return value
        lowered = {str(a).lower(): a for a in args}
        if isinstance(value, str) and value.strip().lower() in lowered:
            return lowered[value.strip().lower()]
        raise StructuredOutputError(f"{path}: {value!r} is not one of {list(args)}")
    if origin in (list, Sequence, tuple, set, frozenset) or tp in (list, tuple, set):
        if isinstance(value, (str, dict)) or value is None:
            if value is None:
                raise StructuredOutputError(f"{path}: expected a list, got null")
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise StructuredOutputError(f"{path}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise StructuredOutputError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin in (set, frozenset) or tp is set:
            return set(items)
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise StructuredOutputError(f"{path}: expected an object, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, path): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _to_dataclass(value, tp, path)
    if _is_pydantic(tp):
        try:
            return tp.model_validate(value)
        except Exception as exc:
            raise StructuredOutputError(f"{path}: {exc}") from exc
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "false", "no", "0"}:
            return value.strip().lower() in {"true", "yes", "1"}
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise StructuredOutputError(f"{path}: expected a boolean, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise StructuredOutputError(f"{path}: expected a number, got a boolean")
        try:
            num = float(value) if not isinstance(value, (int, float)) else value
        except (TypeError, ValueError) as exc:
            raise StructuredOutputError(f"{path}: expected a number, got {value!r}") from exc
        if tp is int:
            if float(num) != int(num):
                raise StructuredOutputError(f"{path}: expected an integer, got {value!r}")
            return int(num)
        return float(num)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise StructuredOutputError(f"{path}: expected a string, got {type(value).__name__}")
        return "" if value is None else str(value)
    return value


def _to_dataclass(value: Any, cls: type, path: str) -> Any:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    hints = typing.get_type_hints(cls)
    required = [
        f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if not isinstance(value, dict):
        # A bare value for a one-field schema: {"items": [...]} given as [...]
        if len(required) == 1 or len(fields) == 1:
            target = required[0] if required else fields[0]
            value = {target.name: value}
        else:
            raise StructuredOutputError(f"{path}: expected an object, got {type(value).__name__}")
    by_norm = {_norm_key(k): k for k in value}
    kwargs: dict[str, Any] = {}
    missing = []
    for f in fields:
        key = f.name if f.name in value else by_norm.get(_norm_key(f.name))
        if key is None:
            if f in required:
                missing.append(f.name)
            continue
        kwargs[f.name] = _coerce(value[key], hints.get(f.name, Any), f"{path}.{f.name}")
    if missing:
        raise StructuredOutputError(f"{path}: missing required key(s) {missing}; got keys {sorted(value)}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise StructuredOutputError(f"{path}: {exc}") from exc


def parse_structured(text: str, schema: type[T] | Any) -> T:
    """Parse ``text`` into ``schema``.

    Args:
        text: The model's raw answer.
        schema: A dataclass, a pydantic model, or a typing form (``dict``, ``list[str]``,
            ``dict[str, list[str]]``...). Object keys are matched to field names ignoring case,
            spaces, hyphens and underscores; a bare value is accepted for a one-field dataclass.

    Returns:
        An instance of ``schema``.

    Raises:
        StructuredOutputError: No JSON, or JSON that does not fit the schema (the message says
            which field).
    """
    data = parse_json(text)
    try:
        return typing.cast(T, _coerce(data, schema, "$"))
    except StructuredOutputError as exc:
        exc.raw = text
        raise


def _example(tp: Any, depth: int = 0) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if depth > 4:
        return "..."
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        return {f.name: _example(hints.get(f.name, Any), depth + 1) for f in dataclasses.fields(tp) if f.init}
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        non_none = [a for a in args if a is not type(None)]
        return _example(non_none[0], depth + 1) if non_none else None
    if origin in (list, tuple, set, Sequence) or tp in (list, tuple, set):
        return [_example(args[0] if args else Any, depth + 1)]
    if origin is dict or tp is dict:
        return {"<key>": _example(args[1] if len(args) > 1 else Any, depth + 1)}
    return {str: "<string>", int: "<integer>", float: "<number>", bool: "<true|false>"}.get(tp, "<value>")


def schema_prompt(schema: Any) -> str:
    """A short instruction telling the model which JSON shape to answer with."""
    if _is_pydantic(schema):
        shape = json.dumps(schema.model_json_schema(), ensure_ascii=False)
        return f"Answer with a single JSON value that validates against this JSON schema: {shape}"
    shape = json.dumps(_example(schema), ensure_ascii=False)
    return f"Answer with a single JSON value of this shape (no prose): {shape}"


OnError = Literal["raise", "none", "error"]


def generate_structured(
    model: ChatModel,
    conversations: Sequence[Conversation],
    schema: type[T] | Any,
    *,
    max_retries: int = 2,
    on_error: OnError = "raise",
    **sampling: Any,
) -> list[Any]:
    """Ask ``model`` each conversation and parse every answer into ``schema``.

    All conversations go to the model as one batch; those whose answer fails to parse are asked
    again (again batched), with the failed answer and the parse error appended to the
    conversation, up to ``max_retries`` times.

    Args:
        model: Any :class:`~zjulab.common.protocols.ChatModel`.
        conversations: The questions. Put the wanted JSON shape in them yourself or append
            :func:`schema_prompt` to the last user message.
        schema: See :func:`parse_structured`.
        max_retries: Re-asks after the first answer (0 disables re-asking).
        on_error: What to do with an item that still fails: ``"raise"`` the
            :class:`StructuredOutputError` of the first such item, put ``None`` in its place,
            or put the ``StructuredOutputError`` itself (with ``.raw``) in its place.
        **sampling: Passed to ``model.generate``.

    Returns:
        One parsed value (or ``None`` / error, see ``on_error``) per conversation, in order.

    Raises:
        ConfigError: ``max_retries`` is negative or ``on_error`` unknown.
        StructuredOutputError: With ``on_error="raise"``, an item failed every attempt.
    """
    if max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
    if on_error not in ("raise", "none", "error"):
        raise ConfigError(f"on_error must be 'raise', 'none' or 'error', got {on_error!r}")
    convs: list[Conversation] = [list(c) for c in conversations]
    results: list[Any] = [None] * len(convs)
    errors: dict[int, StructuredOutputError] = {}
    pending = list(range(len(convs)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        answers = model.generate([convs[i] for i in pending], **sampling)
        still: list[int] = []
        for i, raw in zip(pending, answers):
            try:
                results[i] = parse_structured(raw, schema)
                errors.pop(i, None)
            except StructuredOutputError as exc:
                exc.raw = raw
                exc.attempts = attempt + 1
                errors[i] = exc
                still.append(i)
                convs[i] = convs[i] + [
                    {"role": "assistant", "content": raw},
                    {
                        "role": "user",
                        "content": f"That answer could not be used: {exc}. {schema_prompt(schema)}",
                    },
                ]
        if still:
            logger.debug(
                "structured output: %d of %d failed on attempt %d", len(still), len(pending), attempt + 1
            )
        pending = still
    for i, failure in sorted(errors.items()):
        if on_error == "raise":
            raise failure
        results[i] = None if on_error == "none" else failure
    return results
