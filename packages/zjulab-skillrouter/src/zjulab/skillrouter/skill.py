"""Skill records and their loaders: ``SKILL.md`` folders, JSONL files and Python objects."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zjulab.skillrouter.errors import (
    DuplicateSkillError,
    EmptyPoolError,
    InvalidSkillError,
    SkillParseError,
)

__all__ = [
    "LoadedSkills",
    "Skill",
    "SkippedFile",
    "load_skills",
    "load_skills_dir",
    "load_skills_jsonl",
    "parse_skill_md",
    "skills_from_records",
    "slugify",
    "validate_pool",
]

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """Lower-case ``text`` and join its alphanumeric runs with ``-`` (``"PDF Tools!"`` → ``"pdf-tools"``)."""
    return _SLUG.sub("-", text.lower()).strip("-")


@dataclass(frozen=True)
class Skill:
    """One skill of a pool: what an agent could load into its context.

    Args:
        name: Short name from the front matter (``pdf-tools``).
        description: One-paragraph summary an agent normally sees.
        body: The full markdown body: steps, code, constraints. The decisive routing signal.
        id: Stable identifier; defaults to the slug of ``name``. Folder loaders use the
            folder path relative to the root, JSONL loaders the ``skill_id``/``id`` field.
        category: Optional functional group; hard-negative mining draws same-category
            negatives from it.
        metadata: Any other front-matter or JSON fields, kept verbatim.
    """

    name: str
    description: str
    body: str
    id: str = ""
    category: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for fname in ("name", "description", "body", "id", "category"):
            value = getattr(self, fname)
            if not isinstance(value, str):
                raise InvalidSkillError(
                    f"skill field {fname!r} must be a string, got {type(value).__name__}: {value!r}"
                )
            if not _utf8(value):
                raise InvalidSkillError(
                    f"skill field {fname!r} holds characters that are not valid Unicode "
                    f"(lone surrogates, e.g. undecodable file-name bytes): {value[:80]!r}"
                )
        if not self.name.strip():
            raise InvalidSkillError(f"skill {self.id!r} has an empty name")
        if not self.id:
            object.__setattr__(self, "id", slugify(self.name) or self.name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``skill_id`` first) that :func:`skills_from_records` reads back."""
        d = asdict(self)
        d["metadata"] = dict(self.metadata)
        return {"skill_id": d.pop("id"), **d}


def validate_pool(skills: Sequence[Skill]) -> list[Skill]:
    """Check a pool before indexing: non-empty, unique ids.

    Skills with an empty body are accepted (registries often hold only a name and a
    description); their text is ``name | description`` and a log line counts them.

    Returns:
        The skills as a list.

    Raises:
        EmptyPoolError: No skills.
        DuplicateSkillError: Two skills share an id (both positions are named).
        InvalidSkillError: A skill is not a :class:`Skill`.
    """
    pool = list(skills)
    if not pool:
        raise EmptyPoolError("the skill pool is empty")
    seen: dict[str, int] = {}
    empty = 0
    for i, s in enumerate(pool):
        if not isinstance(s, Skill):
            raise InvalidSkillError(f"pool item {i} is {type(s).__name__}, not Skill")
        if not s.body.strip():
            empty += 1
        if s.id in seen:
            raise DuplicateSkillError(f"duplicate skill id {s.id!r} at positions {seen[s.id]} and {i}")
        seen[s.id] = i
    if empty:
        logger.info("%d of %d skills have no body; they are routed on 'name | description'", empty, len(pool))
    return pool


MAX_FRONT_MATTER_NODES = 10_000
"""Most values one front matter may expand to (YAML aliases can make a few lines expand to
billions of nodes, or to a cycle); more is a :class:`SkillParseError`."""


class _TooLarge(ValueError):
    pass


def normalize_value(value: Any, *, max_nodes: int = MAX_FRONT_MATTER_NODES) -> Any:
    """A JSON-ready copy of a YAML value: dates become ISO strings, sets lists, other objects ``str``.

    Raises:
        ValueError: The value refers to itself (a YAML alias cycle) or expands to more than
            ``max_nodes`` values (an alias bomb).
    """
    budget = [max_nodes]
    return _normalize(value, budget, set())


def _normalize(value: Any, budget: list[int], path: set[int]) -> Any:
    import datetime as _dt

    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge("front matter expands to too many values (YAML aliases?)")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return str(value)
    if id(value) in path:
        raise _TooLarge("front matter refers to itself (a YAML alias cycle)")
    path.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {str(k): _normalize(v, budget, path) for k, v in value.items()}
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_normalize(v, budget, path) for v in items]
    finally:
        path.discard(id(value))


def _text_field(value: Any) -> str:
    """A front-matter value used as text (name, description, category) as a string."""
    value = normalize_value(value)
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


@dataclass(frozen=True)
class SkippedFile:
    """A skill file the loader skipped (``errors="skip"``): where and why."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


class LoadedSkills(list):  # type: ignore[type-arg]
    """The skills a loader read (a plain list), with ``skipped``: the files it skipped."""

    skipped: list[SkippedFile]

    def __init__(self, items: Iterable[Skill] = (), skipped: Iterable[SkippedFile] = ()) -> None:
        super().__init__(items)
        self.skipped = list(skipped)


def _field(rec: Mapping[str, Any], *names: str, default: Any = "") -> Any:
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    return default


_KNOWN = {"skill_id", "id", "name", "description", "desc", "body", "content", "category", "metadata"}


def _record_to_skill(rec: Mapping[str, Any], where: str) -> Skill:
    if not isinstance(rec, Mapping):
        raise InvalidSkillError(f"{where}: a skill record must be an object, got {type(rec).__name__}")
    meta = dict(rec.get("metadata") or {})
    meta.update({k: v for k, v in rec.items() if k not in _KNOWN})
    try:
        return Skill(
            name=_field(rec, "name"),
            description=_field(rec, "description", "desc"),
            body=_field(rec, "body", "content"),
            id=str(_field(rec, "skill_id", "id")),
            category=_field(rec, "category"),
            metadata=meta,
        )
    except InvalidSkillError as exc:
        raise InvalidSkillError(f"{where}: {exc}") from None


def skills_from_records(records: Iterable[Mapping[str, Any] | Skill]) -> list[Skill]:
    """Build skills from dicts (``skill_id``/``id``, ``name``, ``description``, ``body``, ...).

    :class:`Skill` objects pass through unchanged. Ids are checked by :func:`validate_pool`.

    Raises:
        InvalidSkillError: A record lacks a name or has a field of the wrong type.
    """
    out = []
    for i, rec in enumerate(records):
        out.append(rec if isinstance(rec, Skill) else _record_to_skill(rec, f"record {i}"))
    return out


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SkillParseError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})", path, line
        ) from None


def parse_skill_md(text: str, path: str = "<string>", skill_id: str = "") -> Skill:
    """Parse one ``SKILL.md``: YAML front matter between ``---`` lines, then the markdown body.

    Args:
        text: The file content.
        path: Shown in error messages.
        skill_id: Id to give the skill (default: slug of its name).

    Raises:
        SkillParseError: No front matter, malformed YAML, or no ``name`` (file and line named).
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise SkillParseError("missing YAML front matter: the first line must be '---'", path, 1)
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise SkillParseError("unterminated front matter: no closing '---' line", path, 1)
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = (mark.line + 2) if mark is not None else 2
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SkillParseError(f"malformed front matter: {problem}", path, line) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise SkillParseError(f"front matter must be a mapping, got {type(meta).__name__}", path, 2)
    try:
        meta = normalize_value(meta)
    except _TooLarge as exc:
        raise SkillParseError(f"malformed front matter: {exc}", path, 2) from None
    name = _text_field(meta.get("name"))
    if not name.strip():
        raise SkillParseError("front matter has no 'name'", path, 2)
    desc = _text_field(meta.get("description"))
    body = "\n".join(lines[end + 1 :]).strip()
    rest = {k: v for k, v in meta.items() if k not in ("name", "description", "category")}
    return Skill(
        name=name.strip(),
        description=desc.strip(),
        body=body,
        id=skill_id,
        category=_text_field(meta.get("category")),
        metadata=rest,
    )


def _skill_files(base: Path, pattern: str) -> list[Path]:
    """Every ``pattern`` file below ``base``, following symlinked folders (each real folder once)."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        if pattern in filenames:
            found.append(Path(dirpath) / pattern)
    return sorted(found)


SOURCE_PATH = "source_path"
"""The metadata key :func:`load_skills_dir` fills with a skill file's absolute path."""


def _key_line(data: bytes, key: str) -> int:
    """The 1-based line of ``key:`` in a file's front matter (2 when not found verbatim)."""
    for i, line in enumerate(data.decode("utf-8-sig", errors="replace").splitlines()[1:], start=2):
        if line.strip() in ("---", "..."):
            break
        if line.split(":", 1)[0].strip().strip("'\"") == key:
            return i
    return 2


def load_skills_dir(
    root: str | os.PathLike[str], pattern: str = "SKILL.md", *, errors: str = "strict"
) -> LoadedSkills:
    """Load every ``SKILL.md`` below ``root`` (the agent-skills layout: one folder a skill).

    The id of a skill is its folder's path relative to ``root`` (``"docs/pdf-tools"``), so it
    stays the same however the files are listed. Symlinked skill folders are followed. Front
    matter values of any YAML type are kept JSON-ready (dates as ISO strings). The file's
    absolute path is kept in ``metadata["source_path"]``, a reserved key: a front matter that
    sets it is refused (:class:`SkillParseError` naming the file and line), never overwritten.

    Args:
        root: The folder.
        pattern: The file name to look for.
        errors: ``"strict"`` raises on the first bad file; ``"skip"`` loads the rest and lists
            every skipped file (path, line, reason) in the result's ``skipped``.

    Raises:
        NotFoundError: ``root`` is not a directory.
        EmptyPoolError: No ``SKILL.md`` below ``root`` (or none readable with ``"skip"``).
        SkillParseError: A file is not UTF-8 or has malformed front matter (``"strict"``).
    """
    from zjulab.common.errors import NotFoundError

    if errors not in ("strict", "skip"):
        raise InvalidSkillError(f"errors must be 'strict' or 'skip', got {errors!r}")
    base = Path(root)
    if not base.is_dir():
        raise NotFoundError(f"skill folder not found: {base}")
    files = _skill_files(base, pattern)
    if not files:
        raise EmptyPoolError(f"no {pattern} files below {base}")
    out: list[Skill] = []
    skipped: list[SkippedFile] = []
    for f in files:
        rel = f.parent.relative_to(base).as_posix()
        sid = rel if rel != "." else slugify(f.stem)
        try:
            if not _utf8(str(f)):  # an id or path no JSON, hash or agent could carry
                raise SkillParseError("the file's path is not valid UTF-8; rename the folder", _shown(f))
            try:
                data = f.read_bytes()
            except OSError as exc:  # a dangling symlink, no permission, a folder named SKILL.md
                raise SkillParseError(f"cannot read: {exc.strerror or exc}", str(f)) from None
            skill = parse_skill_md(_decode(data, str(f)), str(f), skill_id=sid)
        except (SkillParseError, InvalidSkillError) as exc:
            if errors == "strict":
                raise
            line = getattr(exc, "line", None)
            reason = str(exc)
            prefix = f"{f}:{line}: " if line is not None else f"{f}: "
            prefix = f"{_shown(f)}: " if line is None and reason.startswith(f"{_shown(f)}: ") else prefix
            skipped.append(
                SkippedFile(_shown(f), line, reason[len(prefix) :] if reason.startswith(prefix) else reason)
            )
            continue
        if SOURCE_PATH in skill.metadata:  # the loader's key: a user's value would be overwritten
            line = _key_line(data, SOURCE_PATH)
            reason = f"front matter sets {SOURCE_PATH!r}, a key reserved for the file's path; rename it"
            if errors == "strict":
                raise SkillParseError(reason, str(f), line)
            skipped.append(SkippedFile(_shown(f), line, reason))
            continue
        # absolute, so a served index hands agents a path that opens from any working directory
        where = os.path.abspath(f)
        out.append(Skill(**{**skill.__dict__, "metadata": {**skill.metadata, SOURCE_PATH: where}}))
    if not out:
        raise EmptyPoolError(f"no readable {pattern} below {base}: {len(skipped)} skipped")
    logger.info("loaded %d skills from %s (%d skipped)", len(out), base, len(skipped))
    return LoadedSkills(out, skipped)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: Path) -> str:
    """``path`` printable (undecodable bytes shown as backslash escapes)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.jsonl"), *path.glob("*.jsonl.gz")])
        if not files:
            raise EmptyPoolError(f"no .jsonl or .jsonl.gz files in {path}")
        return files
    return [path]


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSONL (or ``.gz``) file.

    Raises:
        SkillParseError: A line is not valid JSON or the file is not UTF-8 (file and line named).
    """
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    for lineno, line in enumerate(_decode(raw, str(path)).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise SkillParseError(f"invalid JSON: {exc.msg}", str(path), lineno) from None


def load_skills_jsonl(path: str | os.PathLike[str]) -> list[Skill]:
    """Load skills from a JSONL file, a ``.jsonl.gz`` file, or a folder of such shards.

    Each line is an object with ``skill_id`` (or ``id``), ``name``, ``description`` and
    ``body`` (the SkillRouter benchmark pool format); other keys go to ``metadata``.

    Raises:
        NotFoundError: The path does not exist.
        SkillParseError: A line is not valid JSON or not UTF-8 (file and line named).
        InvalidSkillError: A record lacks a name.
    """
    from zjulab.common.errors import NotFoundError

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"skill file not found: {p}")
    out: list[Skill] = []
    for f in _jsonl_files(p):
        for lineno, rec in iter_json_lines(f):
            out.append(_record_to_skill(rec, f"{f}:{lineno}"))
    return out


def load_skills(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Skill], *, errors: str = "strict"
) -> list[Skill]:
    """Load skills from a folder of ``SKILL.md`` files, a JSONL path, or Python objects.

    A folder holding ``*.jsonl``/``*.jsonl.gz`` shards and no ``SKILL.md`` is read as JSONL.
    ``errors="skip"`` applies to ``SKILL.md`` folders (see :func:`load_skills_dir`).
    """
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if (
            p.is_dir()
            and not any(p.rglob("SKILL.md"))
            and (any(p.glob("*.jsonl")) or any(p.glob("*.jsonl.gz")))
        ):
            return load_skills_jsonl(p)
        if p.is_dir():
            return load_skills_dir(p, errors=errors)
        return load_skills_jsonl(p)
    return skills_from_records(source)
