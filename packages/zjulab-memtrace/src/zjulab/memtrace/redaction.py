"""Secrets / PII redaction applied to every value before a trace leaves memory.

A redactor is any callable ``value -> value``. :class:`Redactor` walks strings inside lists,
tuples, sets, dicts and dataclasses and replaces what it finds with ``[REDACTED:<kind>]``:

- every detector of `detect-secrets <https://github.com/Yelp/detect-secrets>`_ (AWS keys,
  GitHub / GitLab / Slack / Stripe / OpenAI / PyPI tokens, JWTs, private keys, basic-auth
  URLs, ``secret = "..."`` keywords, ...), the maintained detector this library builds on;
- patterns it misses in free text: ``sk-`` / ``hf_`` style API keys, GitHub fine-grained
  tokens, AWS secret keys, Google API keys, whole JWTs, bearer tokens, ``Authorization: Basic``
  (or ``Token``) credentials, ``user:password@`` in URLs, ``?token=`` query parameters,
  ``password: ...`` assignments, e-mail addresses and phone numbers.

Phone numbers need a phone shape (a ``+`` country code or separated digit groups, 9 to 15
digits), so dates (``2023-05-07``, ``12.05.2023``) and order numbers (``#123456789``) pass.

Redaction is on by default at every sink — :func:`~zjulab.memtrace.store.save_trace`, the DOT
and HTML pictures, OpenTelemetry spans — and never touches the in-memory trace, which replay
needs intact. Pass ``redact=None`` to a sink to turn it off.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_PATTERNS", "DEFAULT_REDACTOR", "Redactor", "RedactFn", "apply_redaction", "redact_text"]

logger = logging.getLogger(__name__)

RedactFn = Callable[[Any], Any]
"""A function mapping a value to its redacted form."""

_SECRET_KEYS = r"(?:password|passwd|pwd|secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|client[_-]?secret)"

DEFAULT_PATTERNS: dict[str, str] = {
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    "jwt": r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    "github_token": r"\b(?:github_pat_[A-Za-z0-9_]{20,}|gh[pousr]_[A-Za-z0-9]{20,})\b",
    "aws_access_key": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b",
    "api_key": r"(?i)\b(?:sk|pk|rk|hf|xox[abprs]|glpat)[-_][A-Za-z0-9_-]{12,}\b",
    # case-sensitive on purpose: a secret key mixes cases, a 40-digit hex hash (a git SHA) does not
    "aws_secret_key": r"(?<![A-Za-z0-9/+])(?=[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=]))(?=[^\s]*[0-9])(?=[^\s]*[A-Z])(?=[^\s]*[a-z])[A-Za-z0-9/+]{40}",
    "google_api_key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    "bearer": r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}",
    "auth_header": r"(?i)(?<=authorization)[\"']?\s*[:=]\s*[\"']?(?:basic|token|digest|apikey)\s+[^\s,;\"']+",
    "url_credentials": r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)",
    "url_secret": rf"(?i)(?<=[?&;]){_SECRET_KEYS}=[^&#\s]+",
    "assignment": rf"(?i)\b{_SECRET_KEYS}\b\s*[:=]\s*(?:\"[^\"]*\"|'[^']*'|[^\s,;]+)",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "phone": r"(?<![\w#/.+-])(?:\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,4}|\(\d{2,4}\)[\s.-]?\d{3,4}[\s.-]?\d{3,4}|\d{2,4}[\s.-]\d{3,4}[\s.-]\d{3,4})(?![\w/-]|\.\d)",
}
"""Built-in patterns, by name, tried in this order; the replacement is ``[REDACTED:<name>]``."""


# backslash escapes of a repr or a JSON string (\n, \t, \x07, \u00e9, \", \\ ...)
_ESCAPE = re.compile(r"(\\(?:[nrtvfab0'\"\\/]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}))")


_MEMO_ENTRIES = 20_000
_MEMO_MAX_CHARS = 8_192
_MARK0 = 0xE000  # private-use characters stand for the escapes while the patterns run
_MARKS = 0x1900


def _mask(text: str) -> tuple[str, list[str]]:
    if "\\" not in text or any(_MARK0 <= ord(c) < _MARK0 + _MARKS for c in text):
        return text, []
    escapes: list[str] = []

    def stash(m: re.Match[str]) -> str:
        escapes.append(m.group(0))
        return chr(_MARK0 + len(escapes) - 1)

    masked = _ESCAPE.sub(stash, text)
    if len(escapes) > _MARKS:
        return text, []
    return masked, escapes


def _unmask(text: str, escapes: list[str]) -> str:
    if not escapes:
        return text
    return "".join(escapes[ord(c) - _MARK0] if _MARK0 <= ord(c) < _MARK0 + len(escapes) else c for c in text)


def _digits_ok(match: re.Match[str]) -> bool:
    n = sum(c.isdigit() for c in match.group(0))
    return 9 <= n <= 15


def _detect_secrets_plugins() -> list[Any]:
    try:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.settings import default_settings
    except ImportError:  # pragma: no cover - a core dependency
        logger.warning("detect-secrets is not installed; redaction uses the built-in patterns only")
        return []
    with default_settings():
        out = []
        for cls in get_mapping_from_secret_type_to_class().values():
            try:
                out.append(cls())
            except Exception:
                logger.debug("detect-secrets plugin %s unavailable", cls.__name__)
        return out


@dataclass
class Redactor:
    """Replace secrets and personal data in every string of a (nested) value.

    Args:
        patterns: Name -> regular expression; the built-in set when omitted.
        keys: Dict keys (and dataclass fields) whose whole value is replaced.
        detect_secrets: Also run every detect-secrets detector on each line.
    """

    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))
    keys: frozenset[str] = frozenset(
        {
            "password",
            "passwd",
            "api_key",
            "apikey",
            "secret",
            "token",
            "authorization",
            "access_token",
            "client_secret",
        }
    )
    detect_secrets: bool = True

    def __post_init__(self) -> None:
        self._compiled = [(name, re.compile(p)) for name, p in self.patterns.items()]
        self._plugins = _detect_secrets_plugins() if self.detect_secrets else []
        self._memo: dict[str, str] = {}

    def text(self, value: str) -> str:
        r"""Redact one string.

        A repr or a JSON text writes a line break as ``\n``; the letters of such escapes
        would glue a secret to the word before it (``\nsk-...``), so each escape is seen by
        the patterns as a separator.
        """
        hit = self._memo.get(value)
        if hit is not None:
            return hit
        masked, escapes = _mask(value)
        masked = self._patterns(masked)
        if self._plugins:
            masked = "\n".join(self._scan_line(line) for line in masked.split("\n"))
        out = _unmask(masked, escapes)
        if len(value) <= _MEMO_MAX_CHARS:  # a trace repeats its strings (every store version)
            if len(self._memo) >= _MEMO_ENTRIES:
                self._memo.clear()
            self._memo[value] = out
        return out

    def _patterns(self, value: str) -> str:
        for name, rx in self._compiled:
            if name == "phone":
                value = rx.sub(lambda m: "[REDACTED:phone]" if _digits_ok(m) else m.group(0), value)
            else:
                value = rx.sub(f"[REDACTED:{name}]", value)
        return value

    def _scan_line(self, line: str) -> str:
        if not line.strip():
            return line
        found: list[tuple[str, str]] = []
        for plugin in self._plugins:
            try:
                hits = plugin.analyze_line(filename="trace.txt", line=line, line_number=1)
            except Exception:
                continue
            found.extend((h.type, h.secret_value) for h in hits if h.secret_value)
        for kind, secret in sorted(found, key=lambda x: -len(x[1])):
            if secret and "[REDACTED:" not in secret:
                line = line.replace(secret, f"[REDACTED:{kind.lower().replace(' ', '_')}]")
        return line

    def __call__(self, value: Any) -> Any:
        """Return a redacted copy of ``value``."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            # keys are data too (a store keyed by e-mail address): they are redacted like values
            return {
                (self.text(k) if isinstance(k, str) else k): (
                    "[REDACTED:key]" if isinstance(k, str) and k.lower() in self.keys else self(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        if isinstance(value, (set, frozenset)):
            return sorted((self(v) for v in value), key=repr)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                "__dataclass__": type(value).__name__,
                **{
                    f.name: "[REDACTED:key]" if f.name.lower() in self.keys else self(getattr(value, f.name))
                    for f in dataclasses.fields(value)
                },
            }
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        # any other object: what leaves memory is its redacted repr
        return {"__repr__": self.text(repr(value))}


DEFAULT_REDACTOR = Redactor()
"""The redactor every sink uses unless told otherwise."""


def apply_redaction(value: Any, redact: RedactFn | None) -> Any:
    """``redact(value)``, or ``value`` itself when ``redact`` is None."""
    return value if redact is None else redact(value)


def redact_text(text: str, redact: RedactFn | None) -> str:
    """Redact a rendered string (a repr, a traceback, a label) as a last pass."""
    if redact is None:
        return text
    out = redact(text)
    return out if isinstance(out, str) else str(out)
