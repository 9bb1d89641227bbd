"""Stage III: long-term consolidation of successful trajectories into procedural circuits.

1. The scope's successful, not yet consolidated trajectories are embedded and clustered with
   k-means, ``k = max(1, ⌊√(n/2)⌋)`` (or ``config.num_clusters``).
2. Each cluster is distilled into a skill (a name and ordered steps) by the chat model; without
   one, the skill lists the memories the cluster's trajectories used, most used first.
3. The skill is refined for up to ``max_consolidation_rounds`` rounds, scored by
   :func:`~zjulab.fluxmem.pems.pems` after each version, and the loop stops once
   ``|ΔPEMS| < pems_epsilon``. ``η`` is the share of the cluster's trajectories that
   ``replay(skill_text, trajectory)`` solves. Without ``replay`` there is nothing to measure a
   new version by: ``η`` is the share marked successful (always 1 here, since only successes
   are consolidated), so PEMS then only rewards shorter text; the report says so
   (``SkillReport.eta_source == "outcomes"``) and a warning is logged. The best-scoring version
   is kept: a refinement that lowers PEMS is rolled back and the next round starts again from
   the best version.
4. The final skill is written as a *procedural circuit*: a skill node, one node per step,
   ``step`` links skill → step 1 → step 2 → ..., and ``distill`` links from every memory the
   trajectories used to the skill node.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zjulab.fluxmem.clustering import kmeans, num_clusters
from zjulab.fluxmem.nodes import MemoryNode
from zjulab.fluxmem.pems import PEMSTracker, skill_delta

if TYPE_CHECKING:
    from zjulab.fluxmem.memory import FluxMemory

__all__ = ["ConsolidationReport", "SkillReport", "consolidate", "render_skill"]

logger = logging.getLogger(__name__)


@dataclass
class SkillReport:
    """One procedural circuit made by Stage III.

    Args:
        skill_id: Id of the skill node.
        name: Skill name.
        steps: Final steps.
        step_ids: Ids of the step nodes, in order.
        trajectories: Ids of the trajectories it was distilled from.
        pems_history: PEMS of each version, in order.
        converged: Whether ``|ΔPEMS| < ε`` was reached within the round budget.
        eta_source: ``"replay"`` (η measured by the replay callback) or ``"outcomes"`` (no
            callback: the recorded outcomes, which cannot tell versions apart).
        best_round: 1-based round of the version kept (the best PEMS).
    """

    skill_id: str
    name: str
    steps: list[str]
    step_ids: list[str]
    trajectories: list[str]
    pems_history: list[float]
    converged: bool
    eta_source: str = "replay"
    best_round: int = 1


@dataclass
class ConsolidationReport:
    """What :meth:`FluxMemory.consolidate <zjulab.fluxmem.memory.FluxMemory.consolidate>` did.

    Args:
        k: Number of clusters (0 when there was nothing to consolidate).
        clusters: Trajectory ids of each cluster.
        skills: One report per circuit written.
    """

    k: int = 0
    clusters: list[list[str]] = field(default_factory=list)
    skills: list[SkillReport] = field(default_factory=list)


def render_skill(name: str, steps: Sequence[str]) -> str:
    """The text of a skill node: its name, then numbered steps."""
    return name + "\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps))


def _template(members: Sequence[dict[str, Any]]) -> MemoryNode:
    """A node in the scope every member trajectory shares (each id they all agree on)."""
    ids: dict[str, Any] = {}
    for name in ("user_id", "agent_id", "run_id"):
        values = {t.get(name) for t in members}
        if len(values) == 1:
            ids[name] = values.pop()
    return MemoryNode(id="", kind="procedural", content="", **ids)


def _used(t: dict[str, Any]) -> list[str]:
    return list(t.get("evidence") or []) or list(t.get("retrieved") or [])[:3]


def _fallback_skill(mem: FluxMemory, members: Sequence[dict[str, Any]], centre: int) -> tuple[str, list[str]]:
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for t in members:
        for nid in _used(t):
            if nid in mem.graph:
                counts[nid] += 1
                first.setdefault(nid, len(first))
    ranked = sorted(counts, key=lambda n: (-counts[n], first[n]))[:5]
    nodes = mem.graph.nodes_by_id(ranked)
    steps = [f"Recall: {nodes[n].content}" for n in ranked] or [f"Solve: {members[centre]['query']}"]
    return f"Skill for: {members[centre]['query']}", steps


def consolidate(
    mem: FluxMemory,
    scope: dict[str, str],
    *,
    replay: Callable[[str, dict[str, Any]], bool] | None = None,
) -> ConsolidationReport:
    """Run Stage III on the trajectories matching every id of ``scope`` (module docstring)."""
    cfg = mem.config
    trajs = [t for t in mem.trajectories(**scope) if t["success"] and not t["consolidated"]]
    report = ConsolidationReport()
    if not trajs:
        return report
    vecs = mem._encode([t["text"] for t in trajs])
    k = cfg.num_clusters or num_clusters(len(trajs))
    labels = kmeans(vecs, k, iters=cfg.kmeans_iters, seed=cfg.seed)
    report.k = int(labels.max()) + 1
    if replay is None:
        logger.warning(
            "consolidate() without replay: eta is the recorded success share (constant), so PEMS "
            "can only reward shorter skills; pass replay=... to measure each version"
        )
    for c in range(report.k):
        rows = [i for i in range(len(trajs)) if labels[i] == c]
        members = [trajs[i] for i in rows]
        report.clusters.append([t["id"] for t in members])
        centroid = vecs[rows].mean(0)
        centre = int(np.argmax(vecs[rows] @ centroid))
        draft = mem.reasoner.induce_skill([t["text"] for t in members])
        name, steps = (
            (draft.name, draft.steps) if draft is not None else _fallback_skill(mem, members, centre)
        )
        template = _template(members)
        name, steps, history, converged, best_round = _refine_loop(
            mem, template, name, steps, members, replay
        )
        skill = _write_circuit(mem, template, name, steps, members, history, best_round)
        report.skills.append(
            SkillReport(
                skill_id=skill[0],
                name=name,
                steps=list(steps),
                step_ids=skill[1:],
                trajectories=[t["id"] for t in members],
                pems_history=history,
                converged=converged,
                eta_source="replay" if replay is not None else "outcomes",
                best_round=best_round,
            )
        )
        for t in members:
            mem.store.conn.execute(
                "UPDATE trajectories SET consolidated = 1, skill_id = ? WHERE id = ?", (skill[0], t["id"])
            )
    return report


def _count_skills(mem: FluxMemory, template: MemoryNode) -> int:
    scope = {k: getattr(template, k) for k in ("user_id", "agent_id", "run_id") if getattr(template, k)}
    return sum(
        1 for n in mem.graph.nodes(scope) if n.kind == "procedural" and n.metadata.get("role") == "skill"
    )


def _refine_loop(
    mem: FluxMemory,
    template: MemoryNode,
    name: str,
    steps: list[str],
    members: Sequence[dict[str, Any]],
    replay: Callable[[str, dict[str, Any]], bool] | None,
) -> tuple[str, list[str], list[float], bool, int]:
    """Refine a skill; returns the best version, the PEMS history, convergence, best round."""
    cfg = mem.config
    tracker = PEMSTracker(cfg.pems_epsilon)
    n_proc = _count_skills(mem, template) + 1
    text = render_skill(name, steps)
    vec = mem._encode([text])[0]
    prev: np.ndarray | None = None
    best: tuple[float, str, list[str], np.ndarray, int] | None = None
    for rnd in range(1, cfg.max_consolidation_rounds + 1):
        if replay is not None:
            eta = float(np.mean([bool(replay(text, t)) for t in members]))
        else:
            eta = float(np.mean([bool(t["success"]) for t in members]))
        value = tracker.update(eta, n_proc, len(text.split()), skill_delta(vec, prev))
        logger.info("consolidation round %d: PEMS %.4f (eta %.2f)", rnd, value, eta)
        if best is None or value > best[0]:
            best = (value, name, list(steps), vec, rnd)
        elif rnd > 1:
            logger.info("round %d lowered PEMS (%.4f < %.4f): rolled back", rnd, value, best[0])
        if tracker.converged or rnd == cfg.max_consolidation_rounds:
            break
        _, b_name, b_steps, b_vec, _ = best
        b_text = render_skill(b_name, b_steps)
        feedback = (
            f"PEMS {best[0]:.4f} (best so far); {eta:.0%} of the {len(members)} source tasks succeed "
            "with the last version. Make it shorter and more general without losing what makes it work."
        )
        better = mem.reasoner.refine_skill(b_text, feedback)
        if better is not None:
            name, steps = better.name, list(better.steps)
        else:
            name, steps = b_name, list(b_steps)
        prev, text = b_vec, render_skill(name, steps)
        vec = mem._encode([text])[0]
    assert best is not None
    return best[1], best[2], list(tracker.history), tracker.converged, best[4]


def _write_circuit(
    mem: FluxMemory,
    template: MemoryNode,
    name: str,
    steps: Sequence[str],
    members: Sequence[dict[str, Any]],
    history: list[float],
    best_round: int = 0,
) -> list[str]:
    head_meta = {
        "role": "skill",
        "name": name,
        "steps": list(steps),
        "pems": history[best_round - 1] if history and best_round else (max(history) if history else 0.0),
        "pems_history": list(history),
        "trajectories": [t["id"] for t in members],
    }
    head = mem._new_nodes(
        "procedural", [render_skill(name, steps)], template, "consolidation", metadata=[head_meta]
    )[0]
    step_nodes = mem._new_nodes(
        "procedural",
        list(steps),
        template,
        "consolidation",
        metadata=[{"role": "step", "skill": head.id, "index": i} for i in range(len(steps))],
    )
    chain = [head.id] + [s.id for s in step_nodes]
    for a, b in itertools.pairwise(chain):
        mem._link(a, b, "step", 1.0, "consolidation")
    used = list(dict.fromkeys(nid for t in members for nid in _used(t)))
    for nid, node in mem.graph.nodes_by_id(used).items():
        if node.kind != "procedural":
            mem._link(nid, head.id, "distill", 1.0, "consolidation")
    return chain
