"""Failure modes: what kind of mistake an operation made.

A :class:`Taxonomy` maps each operation kind (``extract``, ``update``, ``retrieve``...) to the
mode that is most likely when an operation of that kind is the root cause, and holds the list
of known modes so judges can be told what to choose from. It is extensible: register a new
mode, or map a user-named operation kind to an existing one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from zjulab.memtrace.errors import TracingError

__all__ = ["DEFAULT_TAXONOMY", "FailureMode", "Taxonomy"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FailureMode:
    """One failure mode.

    Args:
        name: Short identifier (``"information_loss"``).
        description: One sentence a judge can read.
        kinds: Operation kinds this mode is the default for.
    """

    name: str
    description: str
    kinds: tuple[str, ...] = ()


_BUILTIN = (
    FailureMode(
        "information_loss",
        "a needed fact was dropped when extracting, chunking, compressing or summarising memory",
        ("extract", "chunk", "summarise", "summarize", "compress", "concat", "load"),
    ),
    FailureMode(
        "incorrect_extraction",
        "a fact was extracted with wrong content (a changed value, name or date)",
        (),
    ),
    FailureMode(
        "wrong_update",
        "an update, merge or delete overwrote or removed a correct memory",
        ("update", "merge", "delete", "store", "index"),
    ),
    FailureMode(
        "retrieval_misalignment",
        "retrieval or reranking returned near-misses instead of the memory that answers the question",
        ("retrieve", "rerank", "search"),
    ),
    FailureMode(
        "generation_error",
        "the answer ignores or misreads evidence that was in its context",
        ("generate", "answer", "reason", "chat"),
    ),
    FailureMode("exception", "the operation raised an exception instead of producing its output", ()),
    FailureMode("other", "a fault that fits none of the other modes", ()),
)


@dataclass
class Taxonomy:
    """A set of failure modes with a default mode per operation kind.

    Args:
        modes: The modes, by name; the built-in six when left empty.
        fallback: Mode used for kinds no mode claims.
    """

    modes: dict[str, FailureMode] = field(default_factory=dict)
    fallback: str = "other"

    def __post_init__(self) -> None:
        if not self.modes:
            self.modes = {m.name: m for m in _BUILTIN}
        if self.fallback not in self.modes:
            raise TracingError(f"fallback mode {self.fallback!r} is not one of {sorted(self.modes)}")

    def __contains__(self, name: object) -> bool:
        return name in self.modes

    def __iter__(self) -> Iterator[FailureMode]:
        return iter(self.modes.values())

    @property
    def names(self) -> list[str]:
        """Mode names in registration order."""
        return list(self.modes)

    def register(self, mode: FailureMode, *, replace: bool = False) -> None:
        """Add a mode.

        Raises:
            TracingError: A mode of that name exists and ``replace`` is false.
        """
        if mode.name in self.modes and not replace:
            raise TracingError(f"failure mode {mode.name!r} already exists (pass replace=True)")
        self.modes[mode.name] = mode

    def map_kind(self, kind: str, mode: str) -> None:
        """Make ``mode`` the default for operations of ``kind``.

        Raises:
            TracingError: ``mode`` is unknown.
        """
        if mode not in self.modes:
            raise TracingError(f"unknown failure mode {mode!r}; known: {self.names}")
        old = self.modes[mode]
        for m in list(self.modes.values()):
            if kind in m.kinds and m.name != mode:
                self.modes[m.name] = FailureMode(
                    m.name, m.description, tuple(k for k in m.kinds if k != kind)
                )
        self.modes[mode] = FailureMode(old.name, old.description, (*old.kinds, kind))

    def default_mode(self, kind: str) -> str:
        """The mode claimed for ``kind`` (the fallback mode when none claims it)."""
        for m in self.modes.values():
            if kind in m.kinds:
                return m.name
        return self.fallback

    def normalise(self, name: str | None, kind: str) -> str:
        """Return ``name`` if it is a known mode (matched loosely), else the default for ``kind``."""
        if name:
            key = name.strip().lower().replace(" ", "_").replace("-", "_")
            if key in self.modes:
                return key
            for m in self.modes:
                if key and (key in m or m in key):
                    return m
            logger.debug("unknown failure mode %r for kind %r; using the default", name, kind)
        return self.default_mode(kind)

    def describe(self, names: Iterable[str] | None = None) -> str:
        """One line per mode, ``name: description``, for prompts."""
        chosen = list(names) if names is not None else self.names
        return "\n".join(f"- {n}: {self.modes[n].description}" for n in chosen if n in self.modes)


DEFAULT_TAXONOMY = Taxonomy()
"""The built-in taxonomy (do not mutate it; build your own ``Taxonomy()`` to extend)."""
