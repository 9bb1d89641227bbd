"""Language identification for the language filter and the IFEval language checkers.

Uses ``langdetect`` (a port of Google's language-detection, n-gram profiles for 55 languages,
shipped inside the wheel, so it works offline). ``langdetect`` samples internally; the seed is
fixed on first use so that the same text always gets the same answer (answers are cached).
"""

from __future__ import annotations

import functools
import logging
import threading

__all__ = ["detect_language", "supported_languages"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_seeded = False


@functools.lru_cache(maxsize=1)
def supported_languages() -> frozenset[str]:
    """The codes :func:`detect_language` can return (langdetect's profiles: ``"en"``, ``"zh-cn"``...).

    A language instruction or filter naming any other code could never be met.
    """
    import os

    from langdetect.detector_factory import PROFILES_DIRECTORY

    return frozenset(os.listdir(PROFILES_DIRECTORY))


@functools.lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the language of ``text`` (``"en"``, ``"de"``, ``"zh-cn"``...).

    Args:
        text: Any text.

    Returns:
        The code, or ``None`` when the text has no letters to judge by (IFEval counts such
        a response as following a language instruction).
    """
    global _seeded
    import langdetect

    with _lock:
        if not _seeded:
            langdetect.DetectorFactory.seed = 0
            _seeded = True
        try:
            return str(langdetect.detect(text))
        except langdetect.LangDetectException:
            logger.debug("no language detected for %r", text[:80])
            return None
