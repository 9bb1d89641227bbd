"""The resumable curation pipeline: stages run one after another over a request-level cache.

Layout of ``out_dir``::

    manifest.json               the latest run: stages, settings, model ids, seeds digest, status
    requests.jsonl              request cache: one line per model answer (or failed attempt)
    01_seeds.output.jsonl       a stage's output records (a view, rewritten by every run)
    01_seeds.setaside.jsonl     records the stage could not use, with the reason and raw answer
    02_reframe.output.jsonl ...
    stats.json                  per stage: counts, seconds, items/s, model calls and tokens
    .conifer.lock               held while a run writes (two runs never interleave)

Every model call is keyed on a hash of (stage, rendered conversation, model id, sampling
settings). Its answer is appended to ``requests.jsonl`` and fsynced the moment it returns, one
request at a time. A run, fresh or resumed, recomputes every stage from its inputs: a cached
answer is replayed, any other request is asked. Changing a seed, a prompt, a setting or a
model therefore changes exactly the affected keys; nothing stale can come back, and nothing
already paid for is asked again. A request that failed (the server was down, refused, or sent
garbage, after every retry) is *set aside*: recorded as failed, reported, and asked again by
the next run, up to ``max_request_failures`` runs. A torn last line (a kill in mid-write) is
dropped and that one request is asked again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from zjulab.common.chat import ChatResult, IncompleteAnswerError
from zjulab.common.errors import RemoteModelError, StructuredOutputError
from zjulab.common.io import read_json, read_jsonl, write_json, write_jsonl
from zjulab.common.progress import progress
from zjulab.common.protocols import ChatModel, Conversation
from zjulab.common.structured import extract_json, generate_structured
from zjulab.conifer._lines import file_lines
from zjulab.conifer.config import PipelineConfig
from zjulab.conifer.errors import CheckpointError, ConiferConfigError, ConiferInputError
from zjulab.conifer.stages import Dropped, LocalStage, ModelStage, Record, Rejection, Stage, default_stages

__all__ = [
    "Pipeline",
    "PipelineResult",
    "RequestCache",
    "StageStats",
    "load_seeds",
    "read_jsonl_tolerant",
    "request_key",
    "seed_id",
]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2
CACHE_FILE = "requests.jsonl"


def seed_id(text: str) -> str:
    """The id of a seed query: derived from its (whitespace-normalised) text, not its position."""
    norm = " ".join(text.split())
    return "s" + hashlib.sha256(norm.encode("utf-8")).hexdigest()[:10]


def load_seeds(source: str | os.PathLike[str] | Iterable[str], *, column: str = "query") -> list[Record]:
    """Seed records ``{"id": seed_id(text), "seed": text}`` from a file, a list, or a ``datasets`` split.

    Ids come from the text, so adding, removing or reordering seeds leaves every other seed's
    id (and cached answers) as they were.

    Args:
        source: A ``.txt`` file (one query a line), a ``.jsonl`` file (``column`` of each
            row), or any iterable of strings / rows (a ``datasets.Dataset`` works).
        column: The field holding the query in JSONL rows or dataset rows.

    Raises:
        ConiferInputError: The file is missing or not UTF-8, a row lacks ``column`` or holds a
            non-string, or nothing was read.
    """
    texts: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            raise ConiferInputError(f"{p}: is a directory, not a seed file")
        if not p.is_file():
            raise ConiferInputError(f"{p}: no such seed file")
        data = p.read_bytes()
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ConiferInputError(
                f"{p}:{line}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                "re-encode the file as UTF-8"
            ) from None
        if p.suffix == ".jsonl":
            for i, line_text in enumerate(file_lines(content), 1):
                if not line_text.strip():
                    continue
                try:
                    row = json.loads(line_text)
                except json.JSONDecodeError as exc:
                    raise ConiferInputError(f"{p}:{i}: invalid JSON: {exc.msg}") from None
                if not isinstance(row, dict) or column not in row:
                    raise ConiferInputError(f"{p}:{i}: row has no {column!r} field")
                if not isinstance(row[column], str):
                    raise ConiferInputError(
                        f"{p}:{i}: {column!r} must be a string, got {type(row[column]).__name__}"
                    )
                texts.append(row[column])
        else:
            texts = [line for line in file_lines(content) if line.strip()]
    else:
        for i, row in enumerate(source):
            if isinstance(row, str):
                texts.append(row)
            elif isinstance(row, dict) and isinstance(row.get(column), str):
                texts.append(row[column])
            else:
                raise ConiferInputError(f"seed {i} is neither a string nor a row with a string {column!r}")
    if not texts:
        raise ConiferInputError("no seed queries")
    seen: set[str] = set()
    out: list[Record] = []
    for text in texts:
        norm = " ".join(text.split())
        if not norm or norm.lower() in seen:
            continue
        seen.add(norm.lower())
        out.append({"id": seed_id(norm), "seed": norm})
    if not out:
        raise ConiferInputError("no seed queries")
    return out


@dataclass
class StageStats:
    """What one stage did in this run.

    Attributes:
        name: Stage name.
        inputs: Input records.
        selected: Inputs the stage worked on (the rest passed through).
        resumed: Model requests answered from the cache (no call made).
        outputs: Output records (pass-through included).
        filtered: Inputs the model dropped.
        set_aside: Inputs that could not be used: rejected answers plus failed requests.
        failed: Inputs whose request failed (server error); asked again by the next run.
        abandoned: Failed inputs not asked again: they failed ``max_request_failures`` runs.
        passed_through: Inputs of an optional stage kept without its output (marked in
            ``lacks``).
        seconds: Wall time of this run of the stage.
        items_per_second: Selected inputs per second.
        usage: Model calls and tokens spent in this run (``calls``, ``prompt_tokens``,
            ``completion_tokens``), when the model reports them.
        complete: Every selected input got a final outcome (no failed request).
    """

    name: str
    inputs: int = 0
    selected: int = 0
    resumed: int = 0
    outputs: int = 0
    filtered: int = 0
    set_aside: int = 0
    failed: int = 0
    abandoned: int = 0
    passed_through: int = 0
    contaminated: int = 0
    seconds: float = 0.0
    items_per_second: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    complete: bool = False


@dataclass
class PipelineResult:
    """The outcome of :meth:`Pipeline.run`.

    Attributes:
        records: Output records of the last stage.
        stats: One entry per stage, in order.
        out_dir: Where everything was written.
        complete: No request failed: every record reached its final state. A run with failed
            requests is resumable: run it again (same ``out_dir``) to ask only those.
        stages: The names of this run's stages, in order (their files are read by
            :meth:`set_aside`).
    """

    records: list[Record]
    stats: list[StageStats]
    out_dir: Path
    complete: bool = True
    stages: list[str] | None = None

    @property
    def failed(self) -> int:
        """Inputs whose requests failed in this run, over all stages."""
        return sum(s.failed for s in self.stats)

    def set_aside(self) -> list[dict[str, Any]]:
        """Every set-aside row of every stage (``stage``, ``key``, ``reason``, ``raw``, ``state``)."""
        rows: list[dict[str, Any]] = []
        if self.stages is None:
            files = sorted(self.out_dir.glob("*.setaside.jsonl"))
        else:  # this run's stages only
            files = [
                self.out_dir / f"{i + 1:02d}_{name}.setaside.jsonl" for i, name in enumerate(self.stages)
            ]
        for f in files:
            if f.is_file():
                rows.extend(read_jsonl(f))
        return rows


def read_jsonl_tolerant(
    path: Path, *, repair: bool = True, check: Callable[[dict[str, Any]], str | None] | None = None
) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL file whose last line may be torn by a crash.

    The good prefix is measured in bytes (the file may hold any UTF-8 text); a torn last line
    is dropped and, with ``repair``, cut off the file so the next append starts clean.

    Args:
        path: The file.
        repair: Cut a torn last line off the file.
        check: Returns what is wrong with a row (``None``: nothing), named with its line.

    Raises:
        CheckpointError: A line other than the last is not JSON, a complete line is not a
            JSON object or fails ``check``, or the file is not UTF-8.
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows: list[dict[str, Any]] = []
    good = 0
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        last = end == -1
        line = raw[pos:] if last else raw[pos:end]
        nxt = len(raw) if last else end + 1
        if line.strip():
            try:
                row = json.loads(line.decode("utf-8"))
                if last:  # complete JSON without its newline: still a torn write
                    raise ValueError("no trailing newline")
            except (ValueError, UnicodeDecodeError) as exc:
                if last or not raw[nxt:].strip():
                    logger.warning("%s: dropping a torn last line (interrupted write)", path)
                    break
                lineno = raw[:pos].count(b"\n") + 1
                raise CheckpointError(f"{path}:{lineno}: invalid line in checkpoint: {exc}") from None
            problem = "not a JSON object" if not isinstance(row, dict) else (check(row) if check else None)
            if problem:
                lineno = raw[:pos].count(b"\n") + 1
                raise CheckpointError(f"{path}:{lineno}: invalid line in checkpoint: {problem}")
            rows.append(row)
        good = nxt
        pos = nxt
    if repair and good < len(raw):
        with path.open("r+b") as fh:
            fh.truncate(good)
            fh.flush()
            os.fsync(fh.fileno())
    return rows


def request_key(stage: str, conversation: Conversation, model_id: str, sampling: dict[str, Any]) -> str:
    """The cache key of one model request: a hash of stage, conversation, model and sampling."""
    blob = json.dumps(
        {"stage": stage, "messages": conversation, "model": model_id, "sampling": sampling},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _cache_row_problem(row: dict[str, Any]) -> str | None:
    if not isinstance(row.get("key"), str) or not row["key"]:
        return "no string 'key'"
    if "text" in row and not isinstance(row["text"], str):
        return f"'text' is a {type(row['text']).__name__}, not a string"
    if "text" not in row and "error" not in row:
        return "neither 'text' nor 'error'"
    return None


class RequestCache:
    """Model answers keyed by :func:`request_key`, appended and fsynced one at a time.

    A line is ``{"key", "stage", "text"}`` for an answer or ``{"key", "stage", "error", "run"}``
    for a failed request, with ``"transient": true`` when the server could not be reached or
    was unavailable (a timeout, a refused connection, HTTP 408/409/429/5xx). Transient failures
    never count towards ``max_request_failures``: an outage, however many runs it lasts, is asked
    again once the server is back. Thread-safe; one writer process at a time (the pipeline holds
    a lock).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._answers: dict[str, str] = {}
        self._finish: dict[str, str] = {}
        self._failures: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None
        for row in read_jsonl_tolerant(path, check=_cache_row_problem):
            key = str(row.get("key", ""))
            if "text" in row:
                self._answers[key] = str(row["text"])
                if row.get("finish"):
                    self._finish[key] = str(row["finish"])
            elif "error" in row and row.get("transient") is not True:
                self._failures.setdefault(key, set()).add(str(row.get("run", "")))

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> str | None:
        """The cached answer, if any."""
        return self._answers.get(key)

    def failed_runs(self, key: str) -> int:
        """How many runs this request was refused in (it has no answer yet; outages not counted)."""
        return len(self._failures.get(key, ()))

    def _append(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finish(self, key: str) -> str | None:
        """How a cached answer ended when it was not normally (``"length"``, ``"content_filter"``)."""
        return self._finish.get(key)

    def put(self, key: str, stage: str, text: str, finish: str | None = None) -> None:
        """Record an answer (durably, before returning); ``finish`` notes a cut-off or filtered one."""
        with self._lock:
            if key in self._answers:
                return
            row = {"key": key, "stage": stage, "text": text}
            if finish:
                row["finish"] = finish
            self._append(row)
            self._answers[key] = text
            if finish:
                self._finish[key] = finish

    def put_failure(self, key: str, stage: str, error: str, run: str, *, transient: bool = False) -> None:
        """Record that a request failed in run ``run`` (``transient``: the server was unavailable)."""
        with self._lock:
            row: dict[str, Any] = {"key": key, "stage": stage, "error": error, "run": run}
            if transient:
                row["transient"] = True
            self._append(row)
            if not transient:
                self._failures.setdefault(key, set()).add(run)

    def close(self) -> None:
        """Close the append handle."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class _RequestFailed(Exception):
    """A request failed after every retry (or was abandoned); carries the reason."""


class _AnswerRefused(Exception):
    """An answer arrived but the client's finish policy refuses it (``on_truncation="raise"`` ...).

    The answer is cached with how it ended, so a resume refuses it again without asking.
    """

    def __init__(self, reason: str, raw: str) -> None:
        super().__init__(reason)
        self.raw = raw


_POLICY = {"length": "on_truncation", "content_filter": "on_content_filter", "empty": "on_empty"}


class _CachedModel:
    """A ChatModel view that replays cached answers and asks the real model only for the rest."""

    def __init__(
        self,
        model: ChatModel,
        cache: RequestCache,
        stage: str,
        config: PipelineConfig,
        run_id: str,
        counters: dict[str, int],
        lock: threading.Lock,
    ) -> None:
        self.model = model
        self.model_id = _model_id(model)
        self.key_model = _key_model(model)
        # guided JSON: generate_structured sends response_format when the model declares support
        self.json_schema = bool(getattr(model, "json_schema", False) is True and config.guided_json)
        self.cache = cache
        self.stage = stage
        self.config = config
        self.run_id = run_id
        self.counters = counters
        self._lock = lock
        self._local = threading.local()

    def track(self, originals: Sequence[Conversation]) -> tuple[list[str], list[str | None]]:
        """Record, for this thread, the latest answer to each of ``originals`` or its re-asks.

        Returns the two lists that fill in as answers arrive: the answers' text and how each
        ended (``finish_reason``: ``"stop"``, ``"length"``...; ``None`` when the model does not
        say).
        """
        latest: list[str] = [""] * len(originals)
        finishes: list[str | None] = [None] * len(originals)
        self._local.originals = {json.dumps(list(c), sort_keys=True): i for i, c in enumerate(originals)}
        self._local.lengths = sorted({len(c) for c in originals})
        self._local.latest = latest
        self._local.finishes = finishes
        return latest, finishes

    def _note(self, conversations: Sequence[Conversation], results: Sequence[ChatResult]) -> None:
        originals = getattr(self._local, "originals", None)
        if not originals:
            return
        for conv, res in zip(conversations, results):
            for n in self._local.lengths:
                i = originals.get(json.dumps(list(conv[:n]), sort_keys=True))
                if i is not None:
                    self._local.latest[i] = res.text
                    self._local.finishes[i] = res.finish_reason
                    break

    def generate(self, conversations: Sequence[Conversation], **sampling: Any) -> list[str]:
        """The answers' text (see :meth:`generate_results`)."""
        return [r.text for r in self.generate_results(conversations, **sampling)]

    def generate_results(self, conversations: Sequence[Conversation], **sampling: Any) -> list[ChatResult]:
        """Cached or fresh answers with how each ended, so a cut-off answer is known as one."""
        out = self._generate(conversations, **sampling)
        self._note(conversations, out)
        return out

    def _refuse_if_policy_says(self, text: str, how: str | None) -> None:
        how = how if how in ("length", "content_filter") else ("" if text.strip() else "empty")
        if how and getattr(self.model, _POLICY[how], None) == "raise":
            raise _AnswerRefused(f"the answer ended with {how!r} and the client refuses such answers", text)

    def _generate(self, conversations: Sequence[Conversation], **sampling: Any) -> list[ChatResult]:
        keys = [request_key(self.stage, list(c), self.key_model, sampling) for c in conversations]
        out: list[ChatResult | None] = []
        for k in keys:
            text = self.cache.get(k)
            if text is None:
                out.append(None)
                continue
            how = self.cache.finish(k)
            self._refuse_if_policy_says(text, how)
            out.append(ChatResult(text=text, finish_reason=how))
        with self._lock:
            self.counters["cached"] += sum(r is not None for r in out)
        missing = [i for i, r in enumerate(out) if r is None]
        if missing:
            over = [i for i in missing if self.cache.failed_runs(keys[i]) >= self.config.max_request_failures]
            if over:
                raise _RequestFailed(
                    f"abandoned: the request failed in {self.config.max_request_failures} runs "
                    "(run with retry_abandoned=True / --retry-abandoned to ask again)"
                )
            fresh = self._ask([conversations[i] for i in missing], sampling, [keys[i] for i in missing])
            for i, res in zip(missing, fresh):
                out[i] = res
        return [r for r in out if r is not None]

    def _call(self, convs: list[Conversation], sampling: dict[str, Any]) -> list[ChatResult]:
        """One call of the real model: every answer with how it ended.

        A model with ``generate_results`` (both zjulab chat models, the test doubles) reports
        ``finish_reason``; its failed conversations come back as one :class:`RemoteModelError`
        carrying ``.results``/``.failed``, as ``generate`` raises them. Its finish policy
        (``on_truncation``, ``on_content_filter``, ``on_empty``) is applied here as
        ``generate`` would. A model with ``generate`` only gives ``finish_reason=None``
        (unknown).
        """
        fn = getattr(self.model, "generate_results", None)
        if not callable(fn):
            return [ChatResult(text=str(t)) for t in self.model.generate(convs, **sampling)]
        results = list(fn(convs, **sampling))
        if len(results) != len(convs):
            raise ConiferConfigError(
                f"{self.model_id}: generate_results returned {len(results)} answers for {len(convs)} conversations"
            )
        bad = [j for j, r in enumerate(results) if getattr(r, "error", None) is not None]
        if bad:
            err = next(
                (results[j].error for j in bad if not isinstance(results[j].error, RemoteModelError)), None
            )
            if err is not None:  # a wrong key, model or URL, or a bad request: not worth retrying
                raise err
            exc = RemoteModelError(
                f"{len(bad)} of {len(results)} conversation(s) got no answer: {results[bad[0]].error}"
            )
            exc.results = results  # type: ignore[attr-defined]
            exc.failed = bad  # type: ignore[attr-defined]
            raise exc
        return [
            r if isinstance(r, ChatResult) else ChatResult(text=str(r.text), finish_reason=r.finish_reason)
            for r in results
        ]

    def _ask(self, convs: list[Conversation], sampling: dict[str, Any], keys: list[str]) -> list[ChatResult]:
        delay = self.config.retry_backoff
        last: Exception | None = None
        answers: dict[int, ChatResult] = {}
        pending = list(range(len(convs)))
        transient: dict[int, bool] = {}
        for attempt in range(self.config.max_remote_retries + 1):
            try:
                got_results = self._call([convs[i] for i in pending], sampling)
            except IncompleteAnswerError as exc:
                # every answer arrived (paid for): keep them all, with how the refused ones ended
                refused = set(exc.indices)
                first = ""
                for j, res in enumerate(exc.results):
                    i = pending[j]
                    how = exc.reason if j in refused else getattr(res, "finish_reason", None)
                    self.cache.put(keys[i], self.stage, res.text, finish=how if how != "empty" else None)
                    if j in refused and not first:
                        first = res.text
                with self._lock:
                    self.counters["asked"] += len(pending)
                raise _AnswerRefused(f"{exc}", first) from None
            except RemoteModelError as exc:
                last = exc
                # a client that reports which conversations did get an answer (OpenAIChatModel:
                # ``.results`` and ``.failed``): keep those, ask again only the others
                got = _answered(exc, len(pending))
                for j, res in got.items():
                    i = pending[j]
                    answers[i] = res
                    self.cache.put(keys[i], self.stage, res.text, finish=res.finish_reason)
                with self._lock:
                    self.counters["asked"] += len(got)
                for j, i in enumerate(pending):
                    if j not in got:
                        transient[i] = _is_transient(_item_error(exc, j) or exc)
                pending = [i for j, i in enumerate(pending) if j not in got]
                if attempt < self.config.max_remote_retries:
                    logger.warning("stage %s: remote error (%s); retrying in %.1fs", self.stage, exc, delay)
                    time.sleep(delay)
                    delay *= 2
                continue
            if len(got_results) != len(pending):
                raise ConiferConfigError(
                    f"{self.model_id}: generate returned {len(got_results)} answers for {len(pending)} conversations"
                )
            for i, res in zip(pending, got_results):
                answers[i] = res
                self.cache.put(keys[i], self.stage, res.text, finish=res.finish_reason)
            with self._lock:
                self.counters["asked"] += len(pending)
            for res in got_results:  # cached first: a refused answer is never paid for twice
                self._refuse_if_policy_says(res.text, res.finish_reason)
            return [answers[i] for i in range(len(convs))]
        reason = f"{type(last).__name__}: {last}"
        for i in pending:
            self.cache.put_failure(
                keys[i], self.stage, reason, self.run_id, transient=transient.get(i, False)
            )
        raise _RequestFailed(reason)


def _item_error(exc: Exception, j: int) -> BaseException | None:
    """The error of conversation ``j`` of a failed batch call, when the client reports it."""
    results = getattr(exc, "results", None)
    if isinstance(results, list) and 0 <= j < len(results):
        err = getattr(results[j], "error", None)
        if isinstance(err, BaseException):
            return err
    return None


def _is_transient(err: BaseException) -> bool:
    """Whether a failure says the server was unavailable rather than that it refused the request.

    Unavailable: HTTP 408, 409, 429 or 5xx, or no HTTP answer at all (a timeout, a refused
    connection). A refusal (any other 4xx) or a body that is not a completion is not.
    """
    if not isinstance(err, RemoteModelError):
        return False
    status = getattr(err, "status", None)
    if isinstance(status, int):
        return status in (408, 409, 429) or status >= 500
    return "malformed body" not in str(err) and "refused the request" not in str(err)


def _answered(exc: Exception, n: int) -> dict[int, ChatResult]:
    """Positions -> answers that a failed batch call did return (``exc.results`` / ``exc.failed``)."""
    results = getattr(exc, "results", None)
    failed = getattr(exc, "failed", None)
    if not isinstance(results, list) or len(results) != n or failed is None:
        return {}
    bad = set(failed)
    out: dict[int, ChatResult] = {}
    for j, res in enumerate(results):
        if j in bad:
            continue
        if isinstance(res, str):
            out[j] = ChatResult(text=res)
        elif getattr(res, "error", None) is None and isinstance(getattr(res, "text", None), str):
            out[j] = ChatResult(text=res.text, finish_reason=getattr(res, "finish_reason", None))
    return out


def _model_id(model: Any) -> str:
    for attr in ("model_id", "model_name", "name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__qualname__


def _key_model(model: Any) -> str:
    """The model as the request key sees it: its id, plus the server settings it always sends.

    ``extra_body`` (vLLM/SGLang sampling such as ``top_k``, chat-template switches) shapes the
    answers as much as the sampling keywords do. A client without such settings is keyed by its
    id alone, as before.
    """
    extra = getattr(model, "extra_body", None)
    if isinstance(extra, dict) and extra:
        return f"{_model_id(model)} {json.dumps(extra, sort_keys=True, ensure_ascii=False, default=repr)}"
    return _model_id(model)


def _is_server_client(model: Any) -> bool:
    """Models that turn each conversation into its own HTTP request (OpenAI-compatible clients)."""
    return isinstance(getattr(model, "base_url", None), str)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class Pipeline:
    """Conifer's curation pipeline over any :class:`~zjulab.common.protocols.ChatModel`.

    Args:
        strong: The model that reframes, writes constraints, filters, answers and gives
            feedback (GPT-4 in the paper; any local or OpenAI-compatible model here).
        weak: The model whose answers to the hardest level get external feedback; ``None``
            drops the weak-model stages from the default stage list.
        config: Settings; ``config.out_dir`` receives the cache and stage outputs.
        stages: Custom stage list (default: :func:`~zjulab.conifer.stages.default_stages`).
        guard: A contamination guard for the guard stage (default: built from
            ``config.contamination_prompts`` when set).

    Raises:
        ConiferConfigError: Duplicate stage names, or a weak-model stage without a weak model.
    """

    def __init__(
        self,
        strong: ChatModel,
        weak: ChatModel | None = None,
        config: PipelineConfig | None = None,
        stages: Sequence[Stage] | None = None,
        *,
        guard: Any = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.strong = strong
        self.weak = weak
        self.stages = (
            list(stages)
            if stages is not None
            else default_stages(self.config, weak=weak is not None, guard=guard)
        )
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConiferConfigError(f"stage names must be unique, got {names}")
        for s in self.stages:
            if isinstance(s, ModelStage) and s.role == "weak" and weak is None:
                raise ConiferConfigError(f"stage {s.name!r} needs a weak model")
        self.out_dir = Path(self.config.out_dir)

    # ----------------------------------------------------------------------------- files

    def _file(self, index: int, stage: Stage, suffix: str) -> Path:
        return self.out_dir / f"{index + 1:02d}_{stage.name}{suffix}"

    def _manifest(self, records: list[Record]) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "stages": [s.name for s in self.stages],
            "config": self.config.fingerprint(),
            "models": {"strong": _model_id(self.strong), "weak": _model_id(self.weak) if self.weak else None},
            "seeds": {"count": len(records), "digest": _digest(records)},
        }

    # ------------------------------------------------------------------------------- run

    def run(
        self, seeds: Sequence[Record] | Sequence[str], *, retry_abandoned: bool = False
    ) -> PipelineResult:
        """Run every stage, replaying whatever the request cache in ``out_dir`` already holds.

        Args:
            seeds: Seed records from :func:`load_seeds`, or plain query strings.
            retry_abandoned: Also ask requests that failed in ``max_request_failures`` runs.

        Returns:
            The last stage's records, the statistics and whether the run is complete.

        Raises:
            CheckpointError: A corrupt cache, or another process is running in ``out_dir``.
            ConiferInputError: No seeds, or records without an ``id``.
        """
        from filelock import FileLock, Timeout

        if seeds and isinstance(seeds[0], str):
            records = load_seeds([str(s) for s in seeds])
        else:
            records = [dict(r) for r in seeds if isinstance(r, dict)]
        if not records:
            raise ConiferInputError("no seed records")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConiferInputError(f"out_dir {self.out_dir} is a file, not a folder")
        self._refuse_foreign_folder()  # before the lock file: a refused folder is left as it was
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.out_dir / ".conifer.lock"
        made_lock = not lock_path.exists()
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise CheckpointError(f"{self.out_dir}: another run is writing here") from None
        try:
            return self._run_locked(records, retry_abandoned=retry_abandoned)
        finally:
            lock.release()
            if made_lock and not (self.out_dir / "manifest.json").exists():
                lock_path.unlink(missing_ok=True)  # nothing was run here: leave no trace

    def _remove_stale_stage_files(self, old: dict[str, Any]) -> None:
        """Delete the stage files an earlier run wrote for stages this run does not have.

        Only names this library derives from the earlier manifest's stage list are touched; a
        stage that is gone (no weak model now, filters off) leaves no outputs or set-asides that
        would read as this run's.
        """
        current = {
            self._file(i, st, suffix).name
            for i, st in enumerate(self.stages)
            for suffix in (".output.jsonl", ".setaside.jsonl")
        }
        for i, name in enumerate(old.get("stages") or []):
            if not isinstance(name, str) or "/" in name or "\\" in name:
                continue
            for suffix in (".output.jsonl", ".setaside.jsonl"):
                path = self.out_dir / f"{i + 1:02d}_{name}{suffix}"
                if path.name not in current and path.is_file():
                    path.unlink()

    def _refuse_foreign_folder(self) -> None:
        if not self.out_dir.is_dir() or (self.out_dir / "manifest.json").exists():
            return
        others = [p.name for p in self.out_dir.iterdir() if p.name != ".conifer.lock"]
        if others:
            raise CheckpointError(
                f"{self.out_dir} holds files that are not a zjulab-conifer run ({sorted(others)[:3]}); "
                "use a new or empty out_dir"
            )

    def _run_locked(self, records: list[Record], *, retry_abandoned: bool) -> PipelineResult:
        manifest_path = self.out_dir / "manifest.json"
        self._refuse_foreign_folder()  # again under the lock: files may have arrived meanwhile
        if manifest_path.exists():
            old = read_json(manifest_path)
            if not isinstance(old, dict) or old.get("version") not in (MANIFEST_VERSION,):
                raise CheckpointError(
                    f"{manifest_path}: written by another version of zjulab-conifer "
                    f"(manifest version {old.get('version') if isinstance(old, dict) else '?'}); "
                    "use a new out_dir"
                )
            self._remove_stale_stage_files(old)
        manifest = self._manifest(records)
        manifest.update(status="running", complete=False, stages_done=[])
        write_json(manifest_path, manifest)
        cache = RequestCache(self.out_dir / CACHE_FILE)
        run_id = f"{time.time():.6f}-{os.getpid()}"
        all_stats: list[StageStats] = []
        stats_path = self.out_dir / "stats.json"
        try:
            for index, stage in enumerate(self.stages):
                records, st, aside = self._run_stage(
                    stage, records, cache, run_id, retry_abandoned=retry_abandoned
                )
                write_jsonl(self._file(index, stage, ".output.jsonl"), records)
                aside_path = self._file(index, stage, ".setaside.jsonl")
                if aside or aside_path.exists():
                    write_jsonl(aside_path, aside)
                all_stats.append(st)
                write_json(stats_path, {s.name: vars(s) for s in all_stats})
                manifest["stages_done"].append(stage.name)
                write_json(manifest_path, manifest)
        finally:
            cache.close()
        complete = all(s.complete for s in all_stats)
        manifest.update(
            status="complete" if complete else "incomplete",
            complete=complete,
            failed={s.name: s.failed for s in all_stats if s.failed},
            contaminated=sum(s.contaminated for s in all_stats),
        )
        write_json(manifest_path, manifest)
        if not complete:
            logger.warning(
                "run incomplete: %d request(s) failed; run again with the same out_dir to ask them",
                sum(s.failed for s in all_stats),
            )
        return PipelineResult(records, all_stats, self.out_dir, complete, [s.name for s in self.stages])

    def _model(self, stage: ModelStage) -> ChatModel:
        model = self.weak if stage.role == "weak" else self.strong
        assert model is not None
        return model

    def _run_stage(
        self,
        stage: Stage,
        records: list[Record],
        cache: RequestCache,
        run_id: str,
        *,
        retry_abandoned: bool,
    ) -> tuple[list[Record], StageStats, list[dict[str, Any]]]:
        st = StageStats(stage.name, inputs=len(records))
        if any(not isinstance(r, dict) or "id" not in r for r in records):
            raise ConiferInputError(f"stage {stage.name}: every record needs an 'id'")
        keys = [stage.key(r) for r in records]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ConiferInputError(f"stage {stage.name}: duplicate record id {dup!r}")
        selected = [i for i, r in enumerate(records) if stage.select(r)]
        st.selected = len(selected)
        results: dict[int, tuple[str, Any]] = {}
        model = self._model(stage) if isinstance(stage, ModelStage) else None
        counters = {"cached": 0, "asked": 0}
        usage0 = _usage(model)
        t0 = time.perf_counter()
        if isinstance(stage, LocalStage):
            for i in selected:
                try:
                    outs = stage.process(records[i])
                    results[i] = ("ok", (outs, None if outs else "dropped"))
                except Dropped as exc:
                    results[i] = ("ok", ([], str(exc)))
                except Rejection as exc:
                    results[i] = ("rejected", (str(exc), ""))
        else:
            assert isinstance(stage, ModelStage) and model is not None
            cfg = self.config
            if retry_abandoned:
                cfg = _replace(cfg, max_request_failures=10**9)
            view = _CachedModel(model, cache, stage.name, cfg, run_id, counters, threading.Lock())
            per_call = 1 if _is_server_client(model) else self.config.batch_size
            chunks = [selected[i : i + per_call] for i in range(0, len(selected), per_call)]
            bar = progress(range(len(selected)), desc=stage.name, show=self.config.show_progress, unit="item")

            def work(chunk: list[int]) -> int:
                for i, res in zip(chunk, self._ask(stage, view, [records[i] for i in chunk])):
                    results[i] = res
                return len(chunk)

            workers = min(self.config.max_in_flight, max(len(chunks), 1))
            if workers <= 1:
                for chunk in chunks:
                    for _ in range(work(chunk)):
                        next(bar, None)
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for n in pool.map(work, chunks):
                        for _ in range(n):
                            next(bar, None)
        st.seconds = time.perf_counter() - t0
        st.items_per_second = len(selected) / st.seconds if st.seconds > 0 and selected else 0.0
        st.usage = _usage_delta(usage0, _usage(model))
        st.resumed = counters["cached"]
        optional = bool(getattr(stage, "optional", False))
        out: list[Record] = []
        aside: list[dict[str, Any]] = []
        for i, r in enumerate(records):
            if i not in results:
                out.append(r)
                continue
            status, value = results[i]
            if status == "ok":
                outs, filtered = value
                if filtered is not None:
                    st.filtered += 1
                    if filtered.startswith("contamination"):
                        st.contaminated += 1
                out.extend(outs)
                continue
            reason, raw = value
            state = status  # "rejected" (final) or "failed" (asked again next run)
            if status == "failed":
                st.failed += 1
                if reason.startswith("abandoned"):
                    st.abandoned += 1
                    state = "abandoned"
            st.set_aside += 1
            aside.append({"stage": stage.name, "key": keys[i], "state": state, "reason": reason, "raw": raw})
            if optional:
                st.passed_through += 1
                lacks = dict(r.get("lacks") or {})
                lacks[stage.name] = reason
                out.append(dict(r, lacks=lacks))
        st.outputs = len(out)
        st.complete = st.failed == 0
        logger.info(
            "stage %s: %d in, %d out, %d filtered, %d set aside (%d failed), %d cached, %.1fs",
            stage.name,
            st.inputs,
            st.outputs,
            st.filtered,
            st.set_aside,
            st.failed,
            st.resumed,
            st.seconds,
        )
        return out, st, aside

    def _sampling(self, stage: ModelStage) -> dict[str, Any]:
        length = {
            "structured": self.config.max_new_tokens,
            "verdict": self.config.verdict_max_new_tokens,
            "answer": self.config.answer_max_new_tokens,
        }[stage.answer_length]
        sampling: dict[str, Any] = {"max_new_tokens": length, "temperature": self.config.temperature}
        return sampling

    def _ask(self, stage: ModelStage, view: _CachedModel, batch: list[Record]) -> list[tuple[str, Any]]:
        """One outcome per record.

        ``("ok", (outputs, filtered_reason))`` or ``("rejected" | "failed", (reason, raw))``.
        """
        convs = [stage.conversation(r) for r in batch]
        sampling = self._sampling(stage)
        limit = sampling["max_new_tokens"]
        # the raw text and finish_reason of each record's last answer, for reasons and set-asides
        latest, finishes = view.track(convs)
        try:
            if stage.schema is None:
                results = view.generate_results(convs, **sampling)
                parsed: list[Any] = [r.text for r in results]
                raws = [r.text for r in results]
            else:
                parsed = generate_structured(
                    view,
                    convs,
                    stage.schema,
                    max_retries=self.config.max_structured_retries,
                    on_error="error",
                    **sampling,
                )
                raws = [p.raw if isinstance(p, StructuredOutputError) else "" for p in parsed]
        except (_RequestFailed, _AnswerRefused) as exc:
            if len(batch) > 1:  # an in-process batch: isolate the failing record
                return [o for r in batch for o in self._ask(stage, view, [r])]
            if isinstance(exc, _AnswerRefused):
                return [("rejected", (str(exc), exc.raw))]
            return [("failed", (str(exc), ""))]
        outcomes: list[tuple[str, Any]] = []
        for j, (r, res, raw) in enumerate(zip(batch, parsed, raws)):
            finish = finishes[j]
            if (
                stage.schema is not None
                and not isinstance(res, StructuredOutputError)
                and _inside_unclosed_value(latest[j])
            ):
                raw = latest[j]
                res = StructuredOutputError(
                    "incomplete JSON in the answer: its outer value is never closed, only a "
                    "value inside it parsed",
                    raw=raw,
                    attempts=self.config.max_structured_retries + 1,
                )
            salvaged = None
            if stage.schema is None and finish == "length" and not stage.keeps_cut_off_text:
                why = f"cut off at the token limit ({limit} new tokens): the answer is incomplete"
                if not self.config.salvage_cut_off:
                    outcomes.append(("rejected", (why, raw)))
                    continue
                salvaged = f"{why}; kept as it arrived"
            if isinstance(res, StructuredOutputError):
                rescued = None
                # only an answer that ended at the token limit (or whose end the model does
                # not report) is salvaged; one the model closed itself is not a cut
                if self.config.salvage_cut_off and finish in ("length", None):
                    rescued = stage.salvage(raw)
                if rescued is None:
                    outcomes.append(("rejected", (_reason(res, finish, limit), raw)))
                    continue
                salvaged = (
                    f"cut off at the token limit ({limit} new tokens); kept what arrived whole"
                    if finish == "length"
                    else "the answer ends inside its JSON object (the model does not report how it "
                    "ended); kept what arrived whole"
                )
                res = rescued
            shape = str(getattr(res, "shape_note", "") or "")
            try:
                outs = stage.apply(r, res)
            except Rejection as exc:
                outcomes.append(("rejected", (str(exc), raw or latest[j])))
                continue
            marks: dict[str, str] = {}
            if salvaged is not None:
                marks["salvaged"] = salvaged
            if shape:
                marks["shape"] = shape
            if finish == "length" and stage.keeps_cut_off_text:
                marks["cut_off"] = f"cut off at the token limit ({limit} new tokens)"
            for name, note in marks.items():
                outs = [dict(o, **{name: {**dict(o.get(name) or {}), stage.name: note}}) for o in outs]
            filtered = None
            if not outs:
                filtered = str(getattr(res, "reason", "") or "dropped by the model")
            outcomes.append(("ok", (outs, filtered)))
        return outcomes


def _inside_unclosed_value(raw: str) -> bool:
    """Whether the JSON that parsed is a piece of an outer object or list that never closed.

    ``extract_json`` takes the first *balanced* value, so from ``{"categories": {"A": ["x",
    "y"], "B"`` (cut off) it takes ``["x", "y"]``; that piece is not the answer. Answers in a
    code fence are left to the fence.
    """
    if "```" in raw:
        return False
    starts = [i for i in (raw.find("{"), raw.find("[")) if i >= 0]
    if not starts:
        return False
    fragment = extract_json(raw)
    return raw.find(fragment) > min(starts)


def _replace(cfg: PipelineConfig, **changes: Any) -> PipelineConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def _reason(exc: Exception, finish: str | None = None, limit: int | None = None) -> str:
    """Why a structured answer was not used, the cut-off first when that is what happened."""
    if isinstance(exc, StructuredOutputError):
        if finish == "length":
            detail = str(exc).removeprefix(
                "the answer was cut off at the token limit before it was complete "
            )
            return (
                f"cut off at the token limit ({limit} new tokens) before its JSON was complete, "
                f"after {exc.attempts} attempt(s) {detail}"
            )
        return f"unparseable model output after {exc.attempts} attempt(s): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _usage(model: Any) -> dict[str, int]:
    usage = getattr(model, "usage", None)
    if usage is None or not hasattr(usage, "as_dict"):
        return {}
    return dict(usage.as_dict())


def _usage_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
