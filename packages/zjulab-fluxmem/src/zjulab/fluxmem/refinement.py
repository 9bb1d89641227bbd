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
* **reshape** (a unit has the wrong granularity): the target unit is split into parts (or
  merged with its strongest linked neighbour) by the chat model; without one, a unit of two
  or more sentences is split at sentence ends, a single sentence is merged with its neighbour.
  All links of the old unit move to the new ones.

Heuristic attribution (no chat model, or an answer that does not parse): *expand* while
evidence is missing from the results or none is known, *prune* once all evidence is retrieved;
an edit that changes nothing switches to the other one, and two idle rounds in a row stop the
loop. A round is fixed when ``check(results)`` says so, or, without ``check``, when every
evidence id is retrieved; with neither, one round is applied.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

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
    user_id: str | None,
    agent_id: str | None,
    run_id: str | None,
    reason: str = "",
    action: str | None = None,
    check: Callable[[list[dict[str, Any]]], bool] | None = None,
    top_k: int = 10,
) -> FeedbackReport:
    """Record the outcome and, for a failure, run the repair loop (module docstring)."""
    from zjulab.fluxmem.memory import node_scope, scope_key

    if not isinstance(query, str) or not query.strip():
        raise MemoryInputError(f"query must be a non-empty string, got {query!r}")
    if action is not None and action not in ("expand", "prune", "reshape"):
        raise MemoryInputError(f"action must be 'expand', 'prune' or 'reshape', got {action!r}")
    success = parse_outcome(outcome)
    key = scope_key(user_id, agent_id, run_id)
    for eid in evidence:
        try:
            node = mem.graph.node(eid)
        except MemoryNotFoundError as exc:
            raise MemoryNotFoundError(f"evidence id {eid!r} is not a memory") from exc
        if node_scope(node) != key:
            raise ScopeError(f"evidence id {eid!r} belongs to another scope")
    narrow_agent = agent_id if user_id else None
    narrow_run = run_id if (user_id or agent_id) else None

    def search() -> list[str]:
        return [nid for nid, _ in mem._rank(query, key, top_k, narrow_agent, narrow_run, None)]

    report = FeedbackReport(query=query, success=success)
    if success:
        report.resolved = True
        report.trajectory_id = _record_trajectory(mem, key, query, evidence, search(), True)
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
            _expand(mem, key, query, ids, ev, rnd, narrow_agent, narrow_run)
        elif rnd.action == "prune":
            _prune(mem, query, ids, ev, reason or rnd.details, rnd)
        else:
            ev = _reshape(mem, ids, ev, reason or rnd.details, rnd)
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
    report.trajectory_id = _record_trajectory(mem, key, query, ev, search(), False)
    return report


def _judge(
    mem: FluxMemory,
    ids: Sequence[str],
    evidence: Sequence[str],
    check: Callable[[list[dict[str, Any]]], bool] | None,
) -> bool | None:
    if check is not None:
        return bool(check([mem.node_dict(mem.graph.node(i)) for i in ids]))
    if evidence:
        return all(e in ids for e in evidence)
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
    if forced is not None:
        kind = "unit" if forced == "reshape" else "connection"
        return RepairRound(r, forced, kind, "forced", target=ids[0] if ids else None)  # type: ignore[arg-type]
    missing = [e for e in evidence if e not in ids]
    if mem.reasoner.enabled and ids:
        att = mem.reasoner.attribute(
            query,
            [mem.graph.node(i).content for i in ids],
            [mem.graph.node(e).content for e in missing],
            reason,
        )
        if att is not None:
            target = ids[att.target] if att.target is not None else ids[0]
            return RepairRound(r, att.action, att.type, "llm", target=target, details=att.details)
    act: Action = "expand" if (missing or not evidence) else "prune"
    if prev is not None and not prev.changed and prev.action in ("expand", "prune"):
        act = "prune" if prev.action == "expand" else "expand"
    return RepairRound(r, act, "connection", "heuristic", target=ids[0] if ids else None)


def _expand(
    mem: FluxMemory,
    key: str,
    query: str,
    ids: Sequence[str],
    evidence: Sequence[str],
    rnd: RepairRound,
    agent_id: str | None,
    run_id: str | None,
) -> None:
    anchor = rnd.target
    if anchor is None:
        return
    sc = mem._scopes[key]
    k = mem.config.expand_top_k
    qv = mem._encode([query])[0]
    retrieved = set(ids)
    targets: list[tuple[str, float]] = []
    for e in evidence:
        if e not in retrieved and e != anchor and not mem.graph.has_link(anchor, e):
            targets.append((e, 1.0))
    for nid, cos in sc.index.search(qv, len(ids) + k + len(evidence) + 8):
        if len(targets) >= k:
            break
        if (
            nid in retrieved
            or nid == anchor
            or any(nid == t for t, _ in targets)
            or mem.graph.has_link(anchor, nid)
        ):
            continue
        if not mem._matches(mem.graph.node(nid), agent_id, run_id, None):
            continue
        targets.append((nid, float(min(1.0, max(0.0, cos)))))
    for nid, w in targets[:k]:
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
    desc = description.strip() or query
    protected = set(evidence)
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
        got = mem.reasoner.verify_links([(desc, [mem.graph.node(s).content for s in suspects_all])])[0]
        scores = None if got is None else dict(zip(suspects_all, got))
    if scores is None:
        dv = mem._encode([desc])[0]
        vecs = np.stack([mem._scopes[_key(mem, s)].index.vector(s) for s in suspects_all])
        scores = dict(zip(suspects_all, (vecs @ dv).tolist()))
    for (src, dst, kind), suspects in edges:
        if max(scores[s] for s in suspects) > mem.config.prune_threshold and mem._unlink(
            src, dst, kind, "refinement", reason="interference"
        ):
            rnd.removed_edges.append((src, dst, kind))


def _key(mem: FluxMemory, node_id: str) -> str:
    from zjulab.fluxmem.memory import node_scope

    return node_scope(mem.graph.node(node_id))


def _reshape(
    mem: FluxMemory, ids: Sequence[str], evidence: list[str], reason: str, rnd: RepairRound
) -> list[str]:
    if rnd.target is None:
        return evidence
    if rnd.decided_by != "llm":
        pick = [i for i in ids if i not in evidence]
        rnd.target = pick[0] if pick else rnd.target
    node = mem.graph.node(rnd.target)
    links = sorted(
        (e.weight, other)
        for other, e in mem.graph.neighbors(node.id, _PRUNABLE)
        if mem.graph.node(other).kind == node.kind
    )
    neighbour = mem.graph.node(links[-1][1]) if links else None
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
            mode, contents = (
                "merge",
                [
                    f"{neighbour.content} {node.content}"
                    if _earlier(neighbour, node)
                    else f"{node.content} {neighbour.content}"
                ],
            )
        else:
            return evidence
    else:
        mode, contents = plan.mode, plan.parts
        if mode == "merge" and neighbour is None:
            return evidence
        if mode == "merge":
            contents = [" ".join(contents)]
    old: list[MemoryNode] = [node]
    if mode == "merge" and neighbour is not None:
        old.append(neighbour)
    old_ids = {n.id for n in old}
    meta = {**node.metadata, "reshaped_from": sorted(old_ids)}
    new_nodes = mem._new_nodes(node.kind, contents, node, "refinement", metadata=[meta] * len(contents))
    for n in old:
        for edge in mem.graph.incident_edges(n.id):
            if edge.source in old_ids and edge.target in old_ids:
                continue
            for nn in new_nodes:
                src = nn.id if edge.source == n.id else edge.source
                dst = nn.id if edge.target == n.id else edge.target
                if mem._link(src, dst, edge.kind, edge.weight, "refinement"):
                    rnd.added_edges.append((src, dst, edge.kind))
    for a, b in itertools.pairwise(new_nodes):
        if mem._link(a.id, b.id, "associate", 1.0, "refinement"):
            rnd.added_edges.append((a.id, b.id, "associate"))
    event = "SPLIT" if mode == "split" else "MERGE"
    for n in old:
        mem._remove(n.id, "refinement", event, detail={"into": [x.id for x in new_nodes]})
        rnd.removed_nodes.append(n.id)
    rnd.added_nodes.extend(x.id for x in new_nodes)
    rnd.type = "unit"
    out = []
    for e in evidence:
        out.extend([x.id for x in new_nodes] if e in old_ids else [e])
    return list(dict.fromkeys(out))


def _earlier(a: MemoryNode, b: MemoryNode) -> bool:
    return (a.created_at, a.id) <= (b.created_at, b.id)


def _record_trajectory(
    mem: FluxMemory, key: str, query: str, evidence: Sequence[str], retrieved: Sequence[str], success: bool
) -> str:
    used = list(evidence) or list(retrieved[:3])
    steps = [mem.graph.node(i).content for i in used if i in mem.graph]
    tid = new_id()
    mem._trajectories.append(
        {
            "id": tid,
            "scope": key,
            "query": query,
            "evidence": list(evidence),
            "retrieved": list(retrieved),
            "text": f"Task: {query}\n" + "\n".join(f"- used: {s}" for s in steps),
            "success": success,
            "consolidated": False,
            "created_at": now_iso(),
        }
    )
    return tid
