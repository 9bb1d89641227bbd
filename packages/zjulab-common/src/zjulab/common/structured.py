"""Get data that matches a schema out of a chat model's answer, validated by pydantic.

A schema is anything pydantic's :class:`~pydantic.TypeAdapter` accepts: a pydantic model, a
dataclass, a ``TypedDict``, an ``Enum``, or a typing form (``list[str]``,
``dict[str, int]``, ``Literal["a", "b"]``...). Validation is strict: ``"3"`` is not an
integer, ``"EVENT"`` is not ``Literal["event"]``, a missing field is missing.

The JSON is taken from the answer as written: a fenced code block or the first balanced
``{...}``/``[...]`` in surrounding prose is extracted, but nothing is repaired. An answer cut off
mid-object (``{"city": "Paris", "country": "Fr``) or otherwise invalid is never patched into a
partial object: :func:`generate_structured` asks again (``max_retries`` times, with the error)
and then reports :class:`~zjulab.common.errors.StructuredOutputError` with the raw text.

When the model says it can constrain decoding (``OpenAIChatModel(..., json_schema=True)``
against vLLM, SGLang or OpenAI), the schema is also sent as
``response_format={"type": "json_schema", ...}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from zjulab.common.errors import ConfigError, StructuredOutputError
from zjulab.common.protocols import ChatModel, Conversation

__all__ = [
    "extract_json",
    "generate_structured",
    "json_schema",
    "parse_json",
    "parse_structured",
    "response_format",
    "schema_prompt",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)


def _balanced_span(text: str, start: int) -> int | None:
    """End index (exclusive) of the JSON value opening at ``text[start]``, or None if unclosed."""
    end, _ = _scan(text, start)
    return end


def _scan(text: str, start: int) -> tuple[int | None, bool]:
    """Scan the JSON value opening at ``text[start]``.

    Returns ``(end, False)`` for a balanced value; ``(None, True)`` when the text ends inside it
    (every later bracket is nested in this unfinished value); ``(None, False)`` on a mismatched
    closing bracket (prose, not JSON).
    """
    stack: list[str] = []
    in_str = esc = False
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if not stack or stack[-1] != c:
                return None, False
            stack.pop()
            if not stack:
                return i + 1, False
    return None, True


def extract_json(text: str) -> str:
    """Return the JSON fragment of an answer, unchanged.

    Order of preference: the content of a fenced code block that holds an object or array; the
    first balanced ``{...}`` or ``[...]``; the stripped text itself (which then fails to parse
    if it is not JSON, e.g. a cut-off object).

    A JSON value that opens and is still open when the text ends is returned as it is (and fails
    to parse as incomplete): a complete value nested inside it, such as ``["a", "b"]`` in the
    cut-off ``{"tags": ["a", "b"], "note": "unfin``, is a fragment of the unfinished answer,
    never the answer. An unclosed bracket in prose (``[the answer is {"a": 1}``) is skipped.
    """
    for m in _FENCE.finditer(text):
        inner = m.group(1).strip()
        if inner[:1] in ("{", "["):
            return inner
    for s in (i for i, c in enumerate(text) if c in "{["):
        end, open_at_end = _scan(text, s)
        if end is not None:
            return text[s:end]
        if open_at_end and _is_cut_off_json(text[s:]):
            return text[s:].strip()
    return text.strip()


def _is_cut_off_json(fragment: str) -> bool:
    """Whether ``fragment`` is the beginning of a JSON value that the text ends inside.

    pydantic-core parses it as partial JSON; prose holding an unclosed bracket (``[the answer
    is {"a": 1}``) is not JSON and fails, so the search goes on past it.
    """
    from pydantic_core import from_json

    try:
        from_json(fragment, allow_partial="trailing-strings")
    except ValueError:
        return False
    return True


def parse_json(text: str) -> Any:
    """Parse the JSON value in a model answer (see :func:`extract_json`); nothing is repaired.

    Raises:
        StructuredOutputError: No complete JSON value (``raw`` holds the answer).
    """
    fragment = extract_json(text)
    try:
        return json.loads(fragment)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(fragment.rstrip()) or _balanced_span(fragment, 0) is None
        why = "incomplete JSON (the answer ends inside a value)" if truncated else "invalid JSON"
        if fragment[:1] not in ("{", "[", '"') and not fragment[:1].isdigit():
            why = "no JSON value"
        raise StructuredOutputError(
            f"{why} in the answer: {exc.msg} (line {exc.lineno}, column {exc.colno})", raw=text
        ) from None


_ADAPTERS: dict[Any, Any] = {}
_ADAPTERS_LOCK = threading.Lock()


def _adapter(schema: Any) -> Any:
    from pydantic import PydanticSchemaGenerationError, PydanticUserError, TypeAdapter

    try:
        cached = _ADAPTERS.get(schema)
    except TypeError:  # an unhashable schema object
        cached = None
    if cached is not None:
        return cached
    try:
        adapter = TypeAdapter(schema)
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
        raise ConfigError(f"schema {schema!r} is not a type pydantic can validate: {exc}") from exc
    with _ADAPTERS_LOCK, contextlib.suppress(TypeError):  # an unhashable schema is not cached
        _ADAPTERS[schema] = adapter
    return adapter


def _describe(exc: Any) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:8]:
        loc = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ()))
        got = err.get("input")
        shown = (
            ""
            if err.get("type") == "missing"
            else f" (got {json.dumps(got, ensure_ascii=False, default=str)[:80]})"
        )
        parts.append(f"{loc}: {err.get('msg')}{shown}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_structured(text: str, schema: type[T] | Any, *, strict: bool = True) -> T:
    """Parse a model answer into ``schema`` with pydantic.

    Args:
        text: The model's raw answer.
        schema: A pydantic model, dataclass, ``TypedDict``, ``Enum`` or typing form.
        strict: Pydantic strict mode (no ``"3"`` for ``3``, enums and literals exactly).

    Returns:
        An instance of ``schema`` (a dataclass instance for a dataclass, a dict for a TypedDict).

    Raises:
        StructuredOutputError: No complete JSON, or JSON that does not fit the schema (the
            message names each failing field; ``raw`` holds the answer).
    """
    from pydantic import ValidationError

    parse_json(text)  # the same extraction; raises on incomplete or invalid JSON
    fragment = extract_json(text)
    try:
        return _adapter(schema).validate_json(fragment, strict=strict)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise StructuredOutputError(
            f"the answer does not fit the schema: {_describe(exc)}", raw=text
        ) from None


def json_schema(schema: Any) -> dict[str, Any]:
    """The JSON schema pydantic generates for ``schema``."""
    return _adapter(schema).json_schema()  # type: ignore[no-any-return]


def schema_prompt(schema: Any) -> str:
    """An instruction telling the model to answer with JSON valid under ``schema``'s JSON schema."""
    shape = json.dumps(json_schema(schema), ensure_ascii=False, separators=(",", ":"))
    return f"Answer with a single JSON value, no prose, that validates against this JSON schema: {shape}"


def _schema_name(schema: Any) -> str:
    name = getattr(schema, "__name__", None) or type(schema).__name__
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(name))[:64] or "answer"


def response_format(schema: Any) -> dict[str, Any]:
    """The ``response_format`` that asks an OpenAI-compatible server for JSON fitting ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": _schema_name(schema), "schema": json_schema(schema)},
    }


OnError = Literal["raise", "none", "error"]


def _ask(model: Any, convs: list[Conversation], sampling: dict[str, Any]) -> list[Any]:
    """Answers as ChatResult-like objects (text, finish_reason, error)."""
    from zjulab.common.chat import ChatResult

    fn = getattr(model, "generate_results", None)
    if callable(fn):
        results = list(fn(convs, **sampling))
    else:
        results = [ChatResult(text=t, finish_reason=None) for t in model.generate(convs, **sampling)]
    if len(results) != len(convs):
        raise StructuredOutputError(
            f"{getattr(model, 'model_id', type(model).__name__)} returned {len(results)} answer(s) "
            f"for {len(convs)} conversation(s)"
        )
    return results


def generate_structured(
    model: ChatModel,
    conversations: Sequence[Conversation],
    schema: type[T] | Any,
    *,
    max_retries: int = 2,
    on_error: OnError = "raise",
    strict: bool = True,
    constrained: bool | None = None,
    **sampling: Any,
) -> list[Any]:
    """Ask ``model`` each conversation and parse every answer into ``schema``.

    All conversations go to the model as one batch; those whose answer is incomplete (cut off
    at the token limit), not JSON or not valid under the schema are asked again (again
    batched), with the failed answer and the error appended to the conversation, up to
    ``max_retries`` times. Nothing is repaired.

    Args:
        model: Any :class:`~zjulab.common.protocols.ChatModel`. With ``generate_results``
            (both zjulab chat models), finish reasons are used: a cut-off answer is reported as
            such. A conversation the model failed to answer at all (its ``ChatResult.error``) is
            not re-asked (the client already retried it).
        conversations: The questions. Put the wanted JSON shape in them yourself or append
            :func:`schema_prompt` to the last user message.
        schema: See :func:`parse_structured`.
        max_retries: Re-asks after the first answer (0 disables re-asking).
        on_error: What to do with an item that still fails: ``"raise"`` the error of the first
            such item (it carries ``.raw``, ``.attempts`` and ``.results``, the whole list),
            put ``None`` in its place, or put the error itself in its place.
        strict: Pydantic strict validation.
        constrained: Send ``response_format`` with the JSON schema; default: when the model
            declares ``json_schema = True`` (``OpenAIChatModel(..., json_schema=True)``).
        **sampling: Passed to the model.

    Returns:
        One parsed value (or ``None`` / error, see ``on_error``) per conversation, in order.

    Raises:
        ConfigError: ``max_retries`` is negative, ``on_error`` unknown, or an invalid schema.
        StructuredOutputError: With ``on_error="raise"``, an item failed every attempt; always,
            when the model returned a different number of answers than conversations.
    """
    if max_retries < 0:
        raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
    if on_error not in ("raise", "none", "error"):
        raise ConfigError(f"on_error must be 'raise', 'none' or 'error', got {on_error!r}")
    _adapter(schema)  # a bad schema is a ConfigError before anything is asked
    if constrained is None:
        constrained = bool(getattr(model, "json_schema", False) is True)
    if constrained and "response_format" not in sampling:
        sampling = {**sampling, "response_format": response_format(schema)}
    convs: list[Conversation] = [list(c) for c in conversations]
    results: list[Any] = [None] * len(convs)
    errors: dict[int, BaseException] = {}
    pending = list(range(len(convs)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        answers = _ask(model, [convs[i] for i in pending], sampling)
        still: list[int] = []
        for i, ans in zip(pending, answers):
            if getattr(ans, "error", None) is not None:
                errors[i] = ans.error
                continue
            raw = ans.text
            try:
                if ans.finish_reason == "length":
                    try:
                        results[i] = parse_structured(raw, schema, strict=strict)
                    except StructuredOutputError as exc:
                        raise StructuredOutputError(
                            f"the answer was cut off at the token limit before it was complete ({exc})",
                            raw=raw,
                        ) from None
                else:
                    results[i] = parse_structured(raw, schema, strict=strict)
                errors.pop(i, None)
            except StructuredOutputError as exc:
                exc.raw = raw
                exc.attempts = attempt + 1
                errors[i] = exc
                still.append(i)
                hint = (
                    "Your answer was cut off before the JSON was complete; answer with a shorter JSON value."
                    if ans.finish_reason == "length"
                    else f"That answer could not be used: {exc}."
                )
                convs[i] = convs[i] + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"{hint} {schema_prompt(schema)}"},
                ]
        if still:
            logger.debug(
                "structured output: %d of %d failed on attempt %d", len(still), len(pending), attempt + 1
            )
        pending = still
    for i, failure in sorted(errors.items()):
        if on_error == "raise":
            failure.results = results  # type: ignore[attr-defined]
            failure.failed = sorted(errors)  # type: ignore[attr-defined]
            raise failure
        results[i] = None if on_error == "none" else failure
    return results
