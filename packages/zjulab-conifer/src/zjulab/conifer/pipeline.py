"""The resumable curation pipeline: stages run one after another, checkpointed to JSONL.

Layout of ``out_dir``::

    manifest.json               configuration fingerprint and stage names (checked on resume)
    01_seeds.jsonl              checkpoint: one line per finished input record of the stage
    01_seeds.setaside.jsonl     records the stage could not use, with the reason and raw answer
    01_seeds.output.jsonl       the stage's output records, written when the stage completes
    02_reframe.jsonl ...
    stats.json                  per stage: counts, seconds, items/s, model calls and tokens

A checkpoint line is ``{"key": <input id>, "outputs": [...]}`` (``"filtered": reason`` when the
model dropped it). Lines are appended and fsynced as batches finish; after a crash, a rerun
reads the checkpoint and set-aside files, skips every key already there and asks the model only
for the rest. A torn last line (the crash hit mid-write) is dropped and redone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from zjulab.common.errors import RemoteModelError, StructuredOutputError
from zjulab.common.io import read_json, read_jsonl, write_json, write_jsonl
from zjulab.common.progress import progress
from zjulab.common.protocols import ChatModel
from zjulab.common.structured import generate_structured
from zjulab.conifer.config import PipelineConfig
from zjulab.conifer.errors import CheckpointError, ConiferConfigError, ConiferInputError
from zjulab.conifer.stages import LocalStage, ModelStage, Record, Rejection, Stage, default_stages

__all__ = ["Pipeline", "PipelineResult", "StageStats", "load_seeds"]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def load_seeds(source: str | os.PathLike[str] | Iterable[str], *, column: str = "query") -> list[Record]:
    """Seed records ``{"id": "s0", "seed": text}`` from a file, a list, or a ``datasets`` split.

    Args:
        source: A ``.txt`` file (one query a line), a ``.jsonl`` file (``column`` of each
            row), or any iterable of strings / rows (a ``datasets.Dataset`` works).
        column: The field holding the query in JSONL rows or dataset rows.

    Raises:
        ConiferInputError: The file is missing, a row lacks ``column``, or nothing was read.
    """
    texts: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.is_file():
            raise ConiferInputError(f"{p}: no such seed file")
        if p.suffix == ".jsonl":
            for i, row in enumerate(read_jsonl(p), 1):
                if not isinstance(row, dict) or column not in row:
                    raise ConiferInputError(f"{p}:{i}: row has no {column!r} field")
                texts.append(str(row[column]))
        else:
            texts = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        for i, row in enumerate(source):
            if isinstance(row, str):
                texts.append(row)
            elif isinstance(row, dict) and column in row:
                texts.append(str(row[column]))
            else:
                raise ConiferInputError(f"seed {i} is neither a string nor a row with {column!r}")
    if not texts:
        raise ConiferInputError("no seed queries")
    seen: set[str] = set()
    out: list[Record] = []
    for text in texts:
        norm = " ".join(text.split())
        if norm.lower() in seen:
            continue
        seen.add(norm.lower())
        out.append({"id": f"s{len(out)}", "seed": norm})
    return out


@dataclass
class StageStats:
    """What one stage did.

    Attributes:
        name: Stage name.
        inputs: Input records.
        selected: Inputs the stage worked on (the rest passed through).
        resumed: Selected inputs already finished in an earlier run (not redone).
        outputs: Output records (pass-through included).
        filtered: Inputs the model dropped.
        set_aside: Inputs that could not be used (see the set-aside file).
        seconds: Wall time of this run of the stage.
        items_per_second: Selected, newly processed inputs per second.
        usage: Model calls and tokens spent in this run (``calls``, ``prompt_tokens``,
            ``completion_tokens``), when the model reports them.
        complete: The stage finished.
    """

    name: str
    inputs: int = 0
    selected: int = 0
    resumed: int = 0
    outputs: int = 0
    filtered: int = 0
    set_aside: int = 0
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
    """

    records: list[Record]
    stats: list[StageStats]
    out_dir: Path

    def set_aside(self) -> list[dict[str, Any]]:
        """Every set-aside row of every stage (``stage``, ``key``, ``reason``, ``raw``)."""
        rows: list[dict[str, Any]] = []
        for f in sorted(self.out_dir.glob("*.setaside.jsonl")):
            rows.extend(read_jsonl(f))
        return rows


class _Checkpoint:
    """Append-only JSONL writer with fsync, tolerant of a torn last line on read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        raw = self.path.read_text(encoding="utf-8")
        lines = raw.split("\n")
        rows: list[dict[str, Any]] = []
        good = 0
        for i, line in enumerate(lines):
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if i >= len(lines) - 1 or all(not x.strip() for x in lines[i + 1 :]):
                    logger.warning("%s: dropping a torn last line (interrupted write)", self.path)
                    break
                raise CheckpointError(f"{self.path}:{i + 1}: invalid JSON in checkpoint: {exc.msg}") from exc
            good += len(line) + 1
        if good < len(raw):
            with self.path.open("r+", encoding="utf-8") as fh:
                fh.truncate(min(good, len(raw.encode("utf-8"))))
        return rows

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class Pipeline:
    """Conifer's curation pipeline over any :class:`~zjulab.common.protocols.ChatModel`.

    Args:
        strong: The model that reframes, writes constraints, filters, answers and gives
            feedback (GPT-4 in the paper; any local or OpenAI-compatible model here).
        weak: The model whose answers to the hardest level get external feedback; ``None``
            drops the weak-model stages from the default stage list.
        config: Settings; ``config.out_dir`` receives the checkpoints.
        stages: Custom stage list (default: :func:`~zjulab.conifer.stages.default_stages`).

    Raises:
        ConiferConfigError: Duplicate stage names, or a weak-model stage without a weak model.
    """

    def __init__(
        self,
        strong: ChatModel,
        weak: ChatModel | None = None,
        config: PipelineConfig | None = None,
        stages: Sequence[Stage] | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.strong = strong
        self.weak = weak
        self.stages = (
            list(stages) if stages is not None else default_stages(self.config, weak=weak is not None)
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

    def _check_manifest(self) -> None:
        manifest: dict[str, Any] = {
            "version": MANIFEST_VERSION,
            "stages": [s.name for s in self.stages],
            "config": self.config.fingerprint(),
        }
        path = self.out_dir / "manifest.json"
        if path.exists():
            old: dict[str, Any] = read_json(path)
            if old.get("version") != MANIFEST_VERSION:
                raise CheckpointError(
                    f"{path}: manifest version {old.get('version')} is not {MANIFEST_VERSION}"
                )
            if old.get("stages") != manifest["stages"] or old.get("config") != manifest["config"]:
                changed = sorted(
                    k
                    for k in set(old.get("config", {})) | set(manifest["config"])
                    if old.get("config", {}).get(k) != manifest["config"].get(k)
                )
                raise CheckpointError(
                    f"{self.out_dir} holds a run with other settings (changed: {changed or 'stages'}); "
                    "use a new out_dir or delete the old one"
                )
        else:
            write_json(path, manifest)

    # ------------------------------------------------------------------------------- run

    def run(self, seeds: Sequence[Record] | Sequence[str]) -> PipelineResult:
        """Run every stage, resuming from whatever ``out_dir`` already holds.

        Args:
            seeds: Seed records from :func:`load_seeds`, or plain query strings.

        Returns:
            The last stage's records and the statistics.

        Raises:
            CheckpointError: ``out_dir`` holds a run with different settings, or a corrupt
                checkpoint.
            ConiferInputError: No seeds, or records without an ``id``.
        """
        if seeds and isinstance(seeds[0], str):
            records = load_seeds([str(s) for s in seeds])
        else:
            records = [dict(r) for r in seeds if isinstance(r, dict)]
        if not records:
            raise ConiferInputError("no seed records")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_manifest()
        stats_path = self.out_dir / "stats.json"
        all_stats: list[StageStats] = []
        for index, stage in enumerate(self.stages):
            output_path = self._file(index, stage, ".output.jsonl")
            if output_path.exists():
                records = read_jsonl(output_path)
                previous = self._stored_stats(stats_path, stage.name)
                all_stats.append(previous or StageStats(stage.name, outputs=len(records), complete=True))
                logger.info("stage %s: complete in an earlier run (%d records)", stage.name, len(records))
                continue
            records, st = self._run_stage(index, stage, records)
            write_jsonl(output_path, records)
            all_stats.append(st)
            write_json(stats_path, {s.name: vars(s) for s in all_stats})
        write_json(stats_path, {s.name: vars(s) for s in all_stats})
        return PipelineResult(records, all_stats, self.out_dir)

    @staticmethod
    def _stored_stats(path: Path, name: str) -> StageStats | None:
        if not path.exists():
            return None
        data = read_json(path).get(name)
        return StageStats(**data) if data else None

    def _model(self, stage: ModelStage) -> ChatModel:
        model = self.weak if stage.role == "weak" else self.strong
        assert model is not None
        return model

    def _run_stage(self, index: int, stage: Stage, records: list[Record]) -> tuple[list[Record], StageStats]:
        st = StageStats(stage.name, inputs=len(records))
        keys = [stage.key(r) for r in records]
        if any(not isinstance(r, dict) or "id" not in r for r in records):
            raise ConiferInputError(f"stage {stage.name}: every record needs an 'id'")
        if len(set(keys)) != len(keys):
            raise ConiferInputError(f"stage {stage.name}: duplicate record ids")
        ckpt = _Checkpoint(self._file(index, stage, ".jsonl"))
        aside = _Checkpoint(self._file(index, stage, ".setaside.jsonl"))
        done: dict[str, dict[str, Any]] = {}
        for row in ckpt.read():
            done[str(row["key"])] = row
        for row in aside.read():
            done[str(row["key"])] = {"key": row["key"], "outputs": [], "set_aside": row.get("reason", "")}
        selected = [r for r in records if stage.select(r)]
        todo = [r for r in selected if stage.key(r) not in done]
        st.selected = len(selected)
        st.resumed = len(selected) - len(todo)
        if st.resumed:
            logger.info("stage %s: %d of %d already done, resuming", stage.name, st.resumed, len(selected))
        model = self._model(stage) if isinstance(stage, ModelStage) else None
        usage0 = _usage(model)
        t0 = time.perf_counter()
        try:
            batches = [
                todo[i : i + self.config.batch_size] for i in range(0, len(todo), self.config.batch_size)
            ]

            def work(batch: list[Record]) -> int:
                rows, bad = self._process(stage, batch)
                ckpt.append(rows)
                aside.append(bad)
                for row in rows:
                    done[str(row["key"])] = row
                for row in bad:
                    done[str(row["key"])] = {"key": row["key"], "outputs": [], "set_aside": row["reason"]}
                return len(batch)

            bar = progress(range(len(todo)), desc=stage.name, show=self.config.show_progress, unit="item")
            if self.config.concurrency == 1 or len(batches) <= 1:
                for batch in batches:
                    for _ in range(work(batch)):
                        next(bar, None)
            else:
                with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
                    for n in pool.map(work, batches):
                        for _ in range(n):
                            next(bar, None)
        finally:
            ckpt.close()
            aside.close()
        st.seconds = time.perf_counter() - t0
        st.items_per_second = len(todo) / st.seconds if st.seconds > 0 and todo else 0.0
        st.usage = _usage_delta(usage0, _usage(model))
        out: list[Record] = []
        for r, k in zip(records, keys):
            if not stage.select(r):
                out.append(r)
                continue
            row = done[k]
            if "set_aside" in row:
                st.set_aside += 1
            elif "filtered" in row:
                st.filtered += 1
            out.extend(row["outputs"])
        st.outputs = len(out)
        st.complete = True
        logger.info(
            "stage %s: %d in, %d out, %d filtered, %d set aside, %.1fs",
            stage.name,
            st.inputs,
            st.outputs,
            st.filtered,
            st.set_aside,
            st.seconds,
        )
        return out, st

    def _process(
        self, stage: Stage, batch: list[Record]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Checkpoint rows and set-aside rows of one batch."""
        rows: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        if isinstance(stage, LocalStage):
            for r in batch:
                try:
                    rows.append({"key": stage.key(r), "outputs": stage.process(r)})
                except Rejection as exc:
                    bad.append({"stage": stage.name, "key": stage.key(r), "reason": str(exc), "raw": ""})
            return rows, bad
        assert isinstance(stage, ModelStage)
        results, raws = self._ask(stage, batch)
        for r, res, raw in zip(batch, results, raws):
            key = stage.key(r)
            if isinstance(res, Exception):
                bad.append({"stage": stage.name, "key": key, "reason": _reason(res), "raw": raw})
                continue
            try:
                outs = stage.apply(r, res)
            except Rejection as exc:
                bad.append({"stage": stage.name, "key": key, "reason": str(exc), "raw": raw})
                continue
            row: dict[str, Any] = {"key": key, "outputs": outs}
            if not outs:
                row["filtered"] = getattr(res, "reason", "") or "dropped by the model"
            rows.append(row)
        return rows, bad

    def _ask(self, stage: ModelStage, batch: list[Record]) -> tuple[list[Any], list[str]]:
        """Ask the model about a batch, re-trying remote failures; errors come back per item."""
        model = self._model(stage)
        convs = [stage.conversation(r) for r in batch]
        length = (
            self.config.max_new_tokens
            if stage.answer_length == "structured"
            else self.config.answer_max_new_tokens
        )
        sampling = {"max_new_tokens": length, "temperature": self.config.temperature}
        delay = self.config.retry_backoff
        for attempt in range(self.config.max_remote_retries + 1):
            try:
                if stage.schema is None:
                    texts = model.generate(convs, **sampling)
                    return list(texts), list(texts)
                parsed = generate_structured(
                    model,
                    convs,
                    stage.schema,
                    max_retries=self.config.max_structured_retries,
                    on_error="error",
                    **sampling,
                )
                raws = [p.raw if isinstance(p, StructuredOutputError) else "" for p in parsed]
                return parsed, raws
            except RemoteModelError as exc:
                if attempt == self.config.max_remote_retries:
                    logger.warning(
                        "stage %s: batch failed after %d attempts: %s", stage.name, attempt + 1, exc
                    )
                    return [exc] * len(batch), [""] * len(batch)
                logger.warning("stage %s: remote error (%s); retrying in %.1fs", stage.name, exc, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _reason(exc: Exception) -> str:
    if isinstance(exc, StructuredOutputError):
        return f"unparseable model output after {exc.attempts} attempt(s): {exc}"
    return f"{type(exc).__name__}: {exc}"


def _usage(model: Any) -> dict[str, int]:
    usage = getattr(model, "usage", None)
    if usage is None or not hasattr(usage, "as_dict"):
        return {}
    return dict(usage.as_dict())


def _usage_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
