"""Batching helpers: fixed-size chunks, token-budget batches and length bucketing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar

from zjulab.common.errors import ConfigError, InputError

__all__ = ["batched", "length_buckets", "padding_side", "token_budget_batches", "tokenizer_lock"]

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield consecutive lists of ``size`` items (the last may be shorter).

    Raises:
        ConfigError: ``size`` is not positive.
    """
    if size <= 0:
        raise ConfigError(f"batch size must be positive, got {size}")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def token_budget_batches(
    lengths: Sequence[int],
    max_tokens: int,
    *,
    max_batch_size: int | None = None,
    sort: bool = True,
) -> list[list[int]]:
    """Group item indices so that ``len(batch) * max(length in batch) <= max_tokens``.

    That product is what a padded batch costs, so the budget bounds memory. With ``sort=True``
    items are ordered by length first (longest first), which minimises padding; the indices
    returned always refer to the original positions.

    Args:
        lengths: Token length of each item.
        max_tokens: Budget of padded tokens per batch.
        max_batch_size: Optional cap on items per batch.
        sort: Group items of similar length together.

    Returns:
        A list of batches, each a list of indices into ``lengths``.

    Raises:
        ConfigError: A non-positive budget or batch size.
        InputError: A single item is longer than the budget, or a length is negative.
    """
    if max_tokens <= 0:
        raise ConfigError(f"max_tokens must be positive, got {max_tokens}")
    if max_batch_size is not None and max_batch_size <= 0:
        raise ConfigError(f"max_batch_size must be positive, got {max_batch_size}")
    order = list(range(len(lengths)))
    if sort:
        order.sort(key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = lengths[i]
        if n < 0:
            raise InputError(f"length of item {i} is negative ({n})")
        if n > max_tokens:
            raise InputError(f"item {i} has {n} tokens, more than max_tokens={max_tokens}")
        new_longest = max(longest, n)
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (new_longest * (len(current) + 1) > max_tokens or full):
            batches.append(current)
            current, new_longest = [], n
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def length_buckets(items: Sequence[T], key: Callable[[T], int], batch_size: int) -> list[list[int]]:
    """Sort indices by ``key`` (descending) and cut them into batches of ``batch_size``.

    Returns index lists so callers can restore the original order after batched inference.
    """
    order = sorted(range(len(items)), key=lambda i: (-key(items[i]), i))
    return list(batched(order, batch_size))


@contextlib.contextmanager
def padding_side(
    tokenizer: Any,
    side: Literal["left", "right"] | None,
    *,
    truncation: Literal["left", "right"] | None = None,
) -> Iterator[Any]:
    """Temporarily set a tokenizer's padding side and, optionally, its truncation side.

    Left padding suits generation and last-token scoring; left truncation keeps the most
    recent text. ``None`` leaves that side as it is. The previous sides are restored on exit,
    also when the body raises.

    The sides are shared state of the tokenizer object, so the block holds a lock of that
    tokenizer (re-entrant): two threads that score or encode with one tokenizer take turns
    instead of padding each other's batches on the wrong side.
    """
    with tokenizer_lock(tokenizer):
        old = tokenizer.padding_side, tokenizer.truncation_side
        if side is not None:
            tokenizer.padding_side = side
        if truncation is not None:
            tokenizer.truncation_side = truncation
        try:
            yield tokenizer
        finally:
            tokenizer.padding_side, tokenizer.truncation_side = old


_LOCKS_GUARD = threading.Lock()
_FALLBACK_LOCK = threading.RLock()


def tokenizer_lock(tokenizer: Any) -> Any:
    """The re-entrant lock that guards ``tokenizer``'s shared state.

    Besides the padding and truncation sides, a fast tokenizer keeps its padding and truncation
    settings in the Rust backend and sets them on every call: a plain call in one thread (no
    padding) switches padding off under a padded batch being encoded in another. Every call
    on a tokenizer that other threads may use holds this lock (:func:`padding_side` takes it).
    """
    lock = getattr(tokenizer, "_zjulab_sides_lock", None)
    if lock is not None:
        return lock
    with _LOCKS_GUARD:
        lock = getattr(tokenizer, "_zjulab_sides_lock", None)
        if lock is None:
            lock = threading.RLock()
            try:
                object.__setattr__(tokenizer, "_zjulab_sides_lock", lock)
            except (AttributeError, TypeError):  # a tokenizer that takes no new attributes
                return _FALLBACK_LOCK
    return lock
