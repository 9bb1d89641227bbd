"""Progress bars that stay quiet when nobody is watching."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    desc: str | None = None,
    total: int | None = None,
    show: bool | None = None,
    unit: str = "it",
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar.

    Args:
        iterable: What to iterate over.
        desc: Label shown before the bar.
        total: Length, when ``iterable`` has none.
        show: ``True`` always shows, ``False`` never; ``None`` (default) shows only when
            standard error is a terminal, so logs and CI output stay clean.
        unit: Unit name shown in the rate.

    Returns:
        An iterator over the same items.
    """
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return iter(iterable)
    from tqdm.auto import tqdm  # imported on first use: tqdm.auto costs ~80 ms at import

    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False))
