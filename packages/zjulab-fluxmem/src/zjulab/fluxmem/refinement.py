"""Stage II: feedback-driven connectivity refinement.

A reported failure starts a repair loop of at most ``max_refinement_rounds`` rounds. Each round
searches the query again, attributes the failure (the chat model's ``Attribution``, or the
heuristic below) and applies one edit:

* **expand** (a connection is missing): link the anchor (the attributed unit, else the top
  result) to the evidence units the search missed, then to the query's nearest units outside
  the retrieved set, ``expand_top_k`` new links in all. Evidence links get weight 1, others
  their cosine to the query.
* **prune** (a connection interferes): every ``associate``/``next`` link touching a retrieved
  unit whose non-evidence endpoint verifies against the interference description above
  ``prune_threshold`` is removed. The description is the caller's ``reason``, else the model's
  details, else the query; verification is the chat model's score, else the cosine.
* **prune** uses the evidence when it is known: every learned ``associate`` link between two
  distractors (retrieved non-evidence units ranked above an evidence unit, or any retrieved
  one while evidence is missing) is removed, whatever the model says; links to evidence units
  (what expand makes) and ``next`` links (the order of what was said) stay, so prune never
  undoes expand; without evidence, or when no such link exists, the interference rule above
  applies.
* **reshape** (a unit has the wrong granularity): *derived* units are created from the target
  — its parts (split), or one unit joining it with its strongest linked neighbour of the same
  user, agent and run (merge) — by the chat model, else at sentence ends / by concatenation.
  The originals are never changed, moved or removed: each derived unit is a ``semantic`` node
  with ``ground`` links to its sources and ``metadata["derived"]`` = ``"split"``/``"merge"``,
  and it must be grounded (at least 70% of its words occur in its sources) or it is rejected.
  A derived unit is never reshaped again and a unit is split or merged once, so reshape never
  undoes its own previous edit.

Heuristic attribution (no chat model, or an answer that does not parse): *expand* while
evidence is missing from the results or none is known, *prune* once all evidence is retrieved;
an edit that changes nothing switches to the other one, and two idle rounds in a row stop the
loop. A round is fixed when ``check(results)`` says so, or, without ``check``, when every
evidence id is retrieved; with neither, one round is applied.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from zjulab.fluxmem.errors import MemoryInputError, MemoryNotFoundError, ScopeError
from zjulab.fluxmem.nodes import MemoryNode, new_id, now_iso

if TYPE_CHECKING:
    from zjulab.fluxmem.memory import FluxMemory

__all__ = ["FeedbackReport", "RepairRound", "parse_outcome", "refine"]

logger = logging.getLogger(__name__)

Action = Literal["expand", "prune", "reshape"]
_PRUNABLE = ("associate", "next")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")


@dataclass
class RepairRound:
    """One Stage II edit.

    Args:
        round: 0-based round number.
        action: The edit applied.
        type: ``connection`` or ``unit``.
        decided_by: ``llm`` (attribution), ``heuristic`` or ``forced`` (the caller's ``action``).
        target: The unit the edit centred on.
        added_edges: ``(source, target, kind)`` of links made.
        removed_edges: ``(source, target, kind)`` of links dropped.
        added_nodes: Units created (reshape).
        removed_nodes: Units replaced (reshape).
        details: The attribution's reason.
    """

    round: int
    action: Action
    type: Literal["connection", "unit"]
    decided_by: Literal["llm", "heuristic", "forced"]
    target: str | None = None
    added_edges: list[tuple[str, str, str]] = field(default_factory=list)
    removed_edges: list[tuple[str, str, str]] = field(default_factory=list)
    added_nodes: list[str] = field(default_factory=list)
    removed_nodes: list[str] = field(default_factory=list)
    details: str = ""

    @property
    def changed(self) -> bool:
        """Whether the edit changed the graph."""
        return bool(self.added_edges or self.removed_edges or self.added_nodes or self.removed_nodes)


@dataclass
class FeedbackReport:
    """What :meth:`FluxMemory.feedback <zjulab.fluxmem.memory.FluxMemory.feedback>` did.

    Args:
        query: The task reported on.
        success: The reported outcome.
        rounds: The repairs applied (empty for a success).
        resolved: Whether the last search passed the check (``None`` when nothing could judge).
        trajectory_id: Id of the recorded trajectory.
    """

    query: str
    success: bool
    rounds: list[RepairRound] = field(default_factory=list)
    resolved: bool | None = None
    trajectory_id: str | None = None


def parse_outcome(outcome: bool | str) -> bool:
    """``True``/``"success"`` → True, ``False``/``"failure"`` → False.

    Raises:
        MemoryInputError: Anything else.
    """
    if isinstance(outcome, bool):
        return outcome
    if isinstance(outcome, str):
        low = outcome.strip().lower()
        if low in ("success", "succeeded", "pass", "passed", "ok", "true", "correct"):
            return True
        if low in ("failure", "failed", "fail", "false", "wrong", "incorrect", "error"):
            return False
    raise MemoryInputError(f"outcome must be a bool or 'success'/'failure', got {outcome!r}")


def refine(
    mem: FluxMemory,
    query: str,
    outcome: bool | str,
    evidence: list[str],
    *,
    scope: dict[str, str],
    reason: str = "",
    action: str | None = None,
    check: Callable[[list[dict[str, Any]]], bool] | None = None,
    top_k: int = 10,
) -> FeedbackReport:
    """Record the outcome and, for a failure, run the repair loop (module docstring)."""
    from zjulab.fluxmem.memory import in_scope

    if not isinstance(query, str) or not query.strip():
        raise MemoryInputError(f"query must be a non-empty string, got {query!r}")
    if action is not None and action not in ("expand", "prune", "reshape"):
        raise MemoryInputError(f"action must be 'expand', 'prune' or 'reshape', got {action!r}")
    success = parse_outcome(outcome)
    for eid in evidence:
        try:
            node = mem.graph.node(eid)
        except MemoryNotFoundError as exc:
            raise MemoryNotFoundError(f"evidence id {eid!r} is not a memory") from exc
        if not in_scope(node, scope):
            raise ScopeError(f"evidence id {eid!r} is outside the scope {scope} (another scope)")

    def search() -> list[str]:
        return [nid for nid, _ in mem._rank(query, scope, top_k, None)]

    report = FeedbackReport(query=query, success=success)
    if success:
        report.resolved = True
        report.trajectory_id = _record_trajectory(mem, scope, query, evidence, search(), True)
        return report

    ev = list(evidence)
    idle = 0
    prev: RepairRound | None = None
    for r in range(mem.config.max_refinement_rounds):
        ids = search()
        if r > 0:
            fixed = _judge(mem, ids, ev, check)
            if fixed is None:
                break
            if fixed:
                report.resolved = True
                break
        rnd = _choose(mem, r, query, ids, ev, reason, action, prev)
        if rnd.action == "expand":
            _expand(mem, scope, query, ids, ev, rnd)
        elif rnd.action == "prune":
            _prune(mem, query, ids, ev, reason or rnd.details, rnd)
        else:
            _reshape(mem, ids, ev, reason or rnd.details, rnd)
        report.rounds.append(rnd)
        logger.info(
            "refinement round %d: %s on %s (%d changes)",
            r,
            rnd.action,
            rnd.target,
            len(rnd.added_edges) + len(rnd.removed_edges) + len(rnd.added_nodes),
        )
        idle = 0 if rnd.changed else idle + 1
        prev = rnd
        if idle >= 2:
            break
    else:
        fixed = _judge(mem, search(), ev, check)
        if fixed is not None:
            report.resolved = fixed
    if report.resolved is None and (ev or check is not None):
        fixed = _judge(mem, search(), ev, check)
        report.resolved = bool(fixed)
    report.trajectory_id = _record_trajectory(mem, scope, query, ev, search(), False)
    return report


def _covers(mem: FluxMemory, ids: Sequence[str]) -> set[str]:
    """``ids`` plus the sources of every derived unit among them (a split part covers its source)."""
    out = set(ids)
    for node in mem.graph.nodes_by_id(list(ids)).values():
        out.update(node.metadata.get("sources") or [])
    return out


def _judge(
    mem: FluxMemory,
    ids: Sequence[str],
    evidence: Sequence[str],
    check: Callable[[list[dict[str, Any]]], bool] | None,
) -> bool | None:
    if check is not None:
        nodes = mem.graph.nodes_by_id(list(ids))
        return bool(check([mem.node_dict(nodes[i]) for i in ids]))
    if evidence:
        covered = _covers(mem, ids)
        return all(e in covered for e in evidence)
    return None


def _choose(
    mem: FluxMemory,
    r: int,
    query: str,
    ids: Sequence[str],
    evidence: Sequence[str],
    reason: str,
    forced: str | None,
    prev: RepairRound | None,
) -> RepairRound:
    covered = _covers(mem, ids)
    missing = [e for e in evidence if e not in covered]
    if forced is not None:
        kind = "unit" if forced == "reshape" else "connection"
        return RepairRound(r, forced, kind, "forced", target=ids[0] if ids else None)  # type: ignore[arg-type]
    if mem.reasoner.enabled and ids:
        nodes = mem.graph.nodes_by_id(list(ids) + missing)
        att = mem.reasoner.attribute(
            query, [nodes[i].content for i in ids], [nodes[e].content for e in missing], reason
        )
        if att is not None:
            target = ids[att.target] if att.target is not None and 0 <= att.target < len(ids) else ids[0]
            return RepairRound(r, att.action, att.type, "llm", target=target, details=att.details)
    act: Action = "expand" if (missing or not evidence) else "prune"
    if prev is not None and not prev.changed and prev.action in ("expand", "prune"):
        act = "prune" if prev.action == "expand" else "expand"
    return RepairRound(r, act, "connection", "heuristic", target=ids[0] if ids else None)


def _expand(
    mem: FluxMemory,
    scope: dict[str, str],
    query: str,
    ids: Sequence[str],
    evidence: Sequence[str],
    rnd: RepairRound,
) -> None:
    anchor = rnd.target
    if anchor is None:
        return
    k = mem.config.expand_top_k
    qv = mem._encode([query])[0]
    retrieved = set(ids)
    covered = _covers(mem, ids)
    targets: list[tuple[str, float]] = []
    for e in evidence:
        if e not in covered and e != anchor and not mem.graph.has_link(anchor, e):
            targets.append((e, 1.0))
    # the evidence of the failure decides; without evidence, the query's nearest unseen units
    if not evidence:
        for nid, cos in mem._dense(qv, len(ids) + k + 8, scope):
            if len(targets) >= k:
                break
            if nid in retrieved or nid == anchor or mem.graph.has_link(anchor, nid):
                continue
            targets.append((nid, float(min(1.0, max(0.0, cos)))))
    limit = max(k, len(evidence))
    for nid, w in targets[:limit]:
        if mem._link(anchor, nid, "associate", w, "refinement"):
            rnd.added_edges.append((anchor, nid, "associate"))


def _prune(
    mem: FluxMemory,
    query: str,
    ids: Sequence[str],
    evidence: Sequence[str],
    description: str,
    rnd: RepairRound,
) -> None:
    protected = set(evidence)
    if protected:
        # distractors: retrieved non-evidence units ranked above an evidence unit (or any, when
        # some evidence was not retrieved at all); their links to retrieved or evidence units
        # lend them score, so those links go, whatever the model says
        covered = _covers(mem, ids)
        ranks = [i for i, nid in enumerate(ids) if _covers(mem, [nid]) & protected]
        cut = len(ids) if not covered >= protected else (max(ranks) if ranks else 0)
        distractors = [nid for nid in ids[:cut] if not (_covers(mem, [nid]) & protected)]
        # links among distractors lift them; a link to an evidence unit lifts the evidence too
        # (propagation is symmetric) and is what expand makes, so it stays
        others = set(distractors)
        for d in distractors:
            # `next` links record the order of what was said and stay; learned links go
            for other, edge in mem.graph.neighbors(d, ("associate",)):
                if other in others and mem._unlink(
                    edge.source, edge.target, edge.kind, "refinement", reason="distractor"
                ):
                    rnd.removed_edges.append((edge.source, edge.target, edge.kind))
        if rnd.removed_edges:
            return
    desc = description.strip() or query
    edges = []
    seen = set()
    for nid in ids:
        for _other, edge in mem.graph.neighbors(nid, _PRUNABLE):
            sig = (edge.source, edge.target, edge.kind)
            if sig in seen:
                continue
            seen.add(sig)
            suspects = [x for x in (edge.source, edge.target) if x not in protected]
            if suspects:
                edges.append((sig, suspects))
    if not edges:
        return
    suspects_all = sorted({s for _, ss in edges for s in ss})
    scores = None
    if mem.reasoner.enabled:
        nodes = mem.graph.nodes_by_id(suspects_all)
        got = mem.reasoner.verify_links([(desc, [nodes[s].content for s in suspects_all])])[0]
        scores = None if got is None else dict(zip(suspects_all, got))
    if scores is None:
        dv = mem._encode([desc])[0]
        vecs = mem.store.vectors.vectors(suspects_all)
        scores = dict(zip(suspects_all, (vecs @ dv).tolist()))
    for (src, dst, kind), suspects in edges:
        if max(scores[s] for s in suspects) > mem.config.prune_threshold and mem._unlink(
            src, dst, kind, "refinement", reason="interference"
        ):
            rnd.removed_edges.append((src, dst, kind))


_WORDS = re.compile(r"\w+")
GROUNDING_MIN = 0.7


def grounding(part: str, sources: Sequence[str]) -> float:
    """Share of ``part``'s words found in ``sources`` (1.0 for a verbatim fragment)."""
    words = [w.lower() for w in _WORDS.findall(part)]
    if not words:
        return 0.0
    have = {w.lower() for s in sources for w in _WORDS.findall(s)}
    return sum(w in have for w in words) / len(words)


def _reshaped(mem: FluxMemory, node_id: str) -> bool:
    """Whether ``node_id`` already has reshape-derived units."""
    for other, edge in mem.graph.neighbors(node_id, ("ground",)):
        if edge.target == node_id:
            n = mem.graph.nodes_by_id([other]).get(other)
            if n is not None and n.metadata.get("derived") in ("split", "merge"):
                return True
    return False


def _reshape(mem: FluxMemory, ids: Sequence[str], evidence: list[str], reason: str, rnd: RepairRound) -> None:
    if rnd.target is None:
        return
    nodes = mem.graph.nodes_by_id(list(ids))
    eligible = [
        i
        for i in ids
        if i in nodes and nodes[i].metadata.get("derived") not in ("split", "merge") and not _reshaped(mem, i)
    ]
    if rnd.decided_by == "llm" and rnd.target in eligible:
        pick = rnd.target
    else:
        # the unit at fault is the best-ranked one that is neither evidence nor already reshaped
        pick = next((i for i in eligible if i not in evidence), eligible[0] if eligible else None)
    if pick is None:
        rnd.details = (rnd.details + " " if rnd.details else "") + "(nothing left to reshape)"
        return
    rnd.target = pick
    node = mem.graph.node(pick)
    links = sorted((e.weight, other) for other, e in mem.graph.neighbors(node.id, _PRUNABLE))
    neighbour = None
    for _, other in reversed(links):
        cand = mem.graph.nodes_by_id([other]).get(other)
        if (
            cand is not None
            and cand.kind == node.kind
            and (cand.user_id, cand.agent_id, cand.run_id) == (node.user_id, node.agent_id, node.run_id)
            and cand.metadata.get("derived") not in ("split", "merge")
            and not _reshaped(mem, cand.id)
        ):
            neighbour = cand
            break
    plan = (
        mem.reasoner.reshape(node.content, neighbour.content if neighbour else None, reason)
        if mem.reasoner.enabled
        else None
    )
    if plan is None:
        parts = [p.strip() for p in _SENTENCE.split(node.content) if p.strip()]
        if len(parts) >= 2:
            mode, contents = "split", parts
        elif neighbour is not None:
            first, second = (neighbour, node) if _earlier(neighbour, node) else (node, neighbour)
            mode, contents = "merge", [f"{first.content} {second.content}"]
        else:
            return
    else:
        mode, contents = plan.mode, [p.strip() for p in plan.parts if p.strip()]
        if mode == "merge":
            if neighbour is None:
                return
            contents = [" ".join(contents)]
    sources = [node] + ([neighbour] if mode == "merge" and neighbour is not None else [])
    src_text = [s.content for s in sources]
    kept = [c for c in contents if grounding(c, src_text) >= GROUNDING_MIN and c not in src_text]
    rejected = [c for c in contents if c not in kept]
    if rejected:
        rnd.details = (rnd.details + " " if rnd.details else "") + f"(rejected ungrounded parts: {rejected})"
        logger.info("reshape rejected ungrounded parts %r of %s", rejected, node.id)
    if not kept:
        return
    src_ids = [s.id for s in sources]
    meta = {"derived": mode, "sources": src_ids}
    new_nodes = mem._new_nodes("semantic", kept, node, "refinement", metadata=[dict(meta) for _ in kept])
    for nn in new_nodes:
        for s in src_ids:
            if mem._link(nn.id, s, "ground", 1.0, "refinement"):
                rnd.added_edges.append((nn.id, s, "ground"))
    for a, b in itertools.pairwise(new_nodes):
        if mem._link(a.id, b.id, "associate", 1.0, "refinement"):
            rnd.added_edges.append((a.id, b.id, "associate"))
    event = "SPLIT" if mode == "split" else "MERGE"
    for s in src_ids:
        mem._record(s, event, "refinement", detail={"into": [x.id for x in new_nodes]})
    rnd.added_nodes.extend(x.id for x in new_nodes)
    rnd.type = "unit"


def _earlier(a: MemoryNode, b: MemoryNode) -> bool:
    return (a.created_at, a.id) <= (b.created_at, b.id)


def _record_trajectory(
    mem: FluxMemory,
    scope: dict[str, str],
    query: str,
    evidence: Sequence[str],
    retrieved: Sequence[str],
    success: bool,
) -> str:
    used = list(evidence) or list(retrieved[:3])
    nodes = mem.graph.nodes_by_id(used)
    steps = [nodes[i].content for i in used if i in nodes]
    tid = new_id()
    mem.store.conn.execute(
        "INSERT INTO trajectories (id, user_id, agent_id, run_id, query, evidence, retrieved, text, success, "
        "consolidated, skill_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?)",
        (
            tid,
            scope.get("user_id"),
            scope.get("agent_id"),
            scope.get("run_id"),
            query,
            json.dumps(list(evidence)),
            json.dumps(list(retrieved)),
            f"Task: {query}\n" + "\n".join(f"- used: {s}" for s in steps),
            int(success),
            now_iso(),
        ),
    )
    return tid
