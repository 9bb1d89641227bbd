"""Secrets / PII redaction applied to every value before a trace leaves memory.

A redactor is any callable ``value -> value``. :class:`Redactor` walks strings inside lists,
tuples and dicts and replaces regular-expression matches; the defaults catch e-mail
addresses, phone numbers and common API-key shapes. Redaction is applied when a trace is
saved, rendered or exported — never to the in-memory trace, which replay needs intact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_PATTERNS", "Redactor", "RedactFn", "apply_redaction"]

RedactFn = Callable[[Any], Any]
"""A function mapping a value to its redacted form."""

DEFAULT_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "api_key": r"(?i)\b(?:sk|pk|rk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{12,}\b",
    "bearer": r"(?i)bearer\s+[A-Za-z0-9._~+/=-]{12,}",
    "phone": r"(?<![\w.])\+?\d[\d\s().-]{7,}\d(?![\w.])",
}
"""Built-in patterns, by name; the replacement is ``[REDACTED:<name>]``."""


@dataclass
class Redactor:
    """Replace pattern matches in every string of a (nested) value.

    Args:
        patterns: Name -> regular expression; the built-in set when omitted.
        keys: Dict keys whose whole value is replaced (``"password"``, ``"api_key"``...).
    """

    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))
    keys: frozenset[str] = frozenset({"password", "api_key", "apikey", "secret", "token", "authorization"})

    def __post_init__(self) -> None:
        self._compiled = [(name, re.compile(p)) for name, p in self.patterns.items()]

    def __call__(self, value: Any) -> Any:
        """Return a redacted copy of ``value``."""
        if isinstance(value, str):
            for name, rx in self._compiled:
                value = rx.sub(f"[REDACTED:{name}]", value)
            return value
        if isinstance(value, Mapping):
            return {
                k: ("[REDACTED:key]" if isinstance(k, str) and k.lower() in self.keys else self(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        return value


def apply_redaction(value: Any, redact: RedactFn | None) -> Any:
    """``redact(value)``, or ``value`` itself when ``redact`` is None."""
    return value if redact is None else redact(value)
