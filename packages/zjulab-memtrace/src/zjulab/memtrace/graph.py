"""The executable memory evolution graph.

A :class:`Trace` is a bipartite directed acyclic graph (a ``rustworkx.PyDiGraph``) of
*variable* nodes — immutable, versioned snapshots of data such as a message, an extracted fact
list, a memory-store state, a retrieved set or an answer — and *operation* nodes (extract,
update, retrieve, generate, or any user-named step). Edges go ``variable -> operation`` for
the operation's inputs and ``operation -> variable`` for its outputs, so every variable has at
most one producer and the graph says exactly which operations a value flowed through.

Each :class:`Operation` keeps what is needed to run it again: the argument binding (which
argument was which variable, which was a constant), its prompt, model id, parameters and
timing, and — while the process that recorded it lives — a handle to the Python callable.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import rustworkx as rx

from zjulab.memtrace.errors import CycleError, DanglingVariableError, TracingError

__all__ = ["Operation", "Slot", "Trace", "Variable"]

logger = logging.getLogger(__name__)

_trace_ids = itertools.count(1)


@dataclass
class Variable:
    """One immutable, versioned value in the graph.

    Args:
        id: Unique id within the trace (``"v3"``).
        name: Human name; successive values of the same name get increasing versions.
        version: 0 for the first variable of this name, then 1, 2, ...
        kind: Free label (``"message"``, ``"facts"``, ``"store"``, ``"answer"``...).
        value: The snapshot (a deep copy taken when it was recorded).
        producer: Id of the operation that produced it; None for a source.
        serializable: False once a value had to be stored by ``repr``.
        created_ns: Wall-clock time of recording, in nanoseconds.
        meta: Free metadata.
    """

    id: str
    name: str
    version: int = 0
    kind: str = "data"
    value: Any = None
    producer: str | None = None
    serializable: bool = True
    created_ns: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


@dataclass
class Slot:
    """One argument of a recorded call: either a variable or a constant.

    Args:
        var: Variable id when the argument was a traced value.
        const: The constant value otherwise (kept live in memory; JSON or repr on disk).
    """

    var: str | None = None
    const: Any = None

    @property
    def is_var(self) -> bool:
        """Whether this slot refers to a variable."""
        return self.var is not None


@dataclass
class Operation:
    """One step of the pipeline.

    Args:
        id: Unique id within the trace (``"op4"``).
        name: Step name (``"extract"``); repeated steps share a name.
        kind: Step kind used for failure-mode defaults (defaults to ``name``).
        inputs: Input variable ids, in argument order.
        outputs: Output variable ids.
        params: Constant arguments by name (JSON-friendly view, for people and judges).
        prompt: The prompt or template the step used, if any.
        model_id: The model the step called, if any.
        start_ns: Start time (wall clock, ns).
        end_ns: End time (wall clock, ns).
        handle_ref: ``module:qualname`` of the callable, for re-binding after a reload.
        parent: Id of the operation this one ran inside, if nested.
        error: ``repr`` of the exception if the call raised.
        args: Positional argument slots.
        kwargs: Keyword argument slots.
        arg_names: Parameter name of each positional slot (None where unknown).
        output_mode: ``"single"`` (one output variable holds the return value) or ``"tuple"``
            (the returned tuple was split over the output variables).
        meta: Free metadata.
    """

    id: str
    name: str
    kind: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    model_id: str | None = None
    start_ns: int = 0
    end_ns: int = 0
    handle_ref: str | None = None
    parent: str | None = None
    error: str | None = None
    args: list[Slot] = field(default_factory=list)
    kwargs: dict[str, Slot] = field(default_factory=dict)
    arg_names: list[str | None] = field(default_factory=list)
    output_mode: Literal["single", "tuple"] = "single"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = self.name

    @property
    def duration_ms(self) -> float:
        """Wall time of the call in milliseconds."""
        return max(0, self.end_ns - self.start_ns) / 1e6


class Trace:
    """An executable memory evolution graph.

    Build one with a :class:`~zjulab.memtrace.tracer.Tracer`, or by hand with
    :meth:`add_variable` and :meth:`add_operation`. Adding is thread-safe.

    Args:
        name: Trace name.
        metadata: Free metadata (question, case id...).
        id: Trace id; generated when omitted.
    """

    def __init__(self, name: str = "trace", metadata: dict[str, Any] | None = None, id: str | None = None):
        self.id = id or f"trace-{next(_trace_ids)}"
        self.name = name
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.variables: dict[str, Variable] = {}
        self.operations: dict[str, Operation] = {}
        self.handles: dict[str, Callable[..., Any]] = {}
        self.graph: rx.PyDiGraph = rx.PyDiGraph(check_cycle=False, multigraph=False)
        self._index: dict[str, int] = {}
        self._versions: dict[str, int] = {}
        self._final: str | None = None
        self._counter = itertools.count()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ building
    def new_id(self, prefix: Literal["v", "op"]) -> str:
        """A fresh node id (``v7``, ``op3``)."""
        with self._lock:
            while True:
                cand = f"{prefix}{next(self._counter)}"
                if cand not in self._index:
                    return cand

    def add_variable(
        self,
        name: str,
        value: Any = None,
        *,
        kind: str = "data",
        id: str | None = None,
        version: int | None = None,
        serializable: bool = True,
        created_ns: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> Variable:
        """Add a variable node (without a producer; an operation claims it as an output).

        Args:
            name: Variable name; its version is the next one for that name unless given.
            value: The snapshot value.
            kind: Free label.
            id: Node id (generated when omitted).
            version: Explicit version (used when reloading).
            serializable: Whether the value is stored losslessly.
            created_ns: Recording time.
            meta: Free metadata.

        Returns:
            The new variable.

        Raises:
            TracingError: The name is empty or the id is taken.
        """
        if not isinstance(name, str) or not name:
            raise TracingError(f"variable name must be a non-empty string, got {name!r}")
        with self._lock:
            vid = id or self.new_id("v")
            if vid in self._index:
                raise TracingError(f"node id {vid!r} already exists in trace {self.id}")
            if version is None:
                version = self._versions.get(name, -1) + 1
            self._versions[name] = max(self._versions.get(name, -1), version)
            var = Variable(
                id=vid,
                name=name,
                version=version,
                kind=kind,
                value=value,
                serializable=serializable,
                created_ns=created_ns,
                meta=dict(meta or {}),
            )
            self.variables[vid] = var
            self._index[vid] = self.graph.add_node(("var", vid))
            return var

    def add_operation(
        self,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        *,
        kind: str | None = None,
        id: str | None = None,
        handle: Callable[..., Any] | None = None,
        **fields: Any,
    ) -> Operation:
        """Add an operation node with edges from its inputs and to its outputs.

        When no argument slots are given, the inputs become the positional arguments in order,
        so ``handle(*input_values)`` is how the operation is re-run.

        Args:
            name: Step name.
            inputs: Existing variable ids read by the step.
            outputs: Existing variable ids written by the step; none may have a producer yet.
            kind: Step kind (defaults to ``name``).
            id: Node id (generated when omitted).
            handle: The callable that re-runs the step.
            **fields: Other :class:`Operation` fields (``params``, ``prompt``, ``model_id``,
                ``start_ns``, ``end_ns``, ``args``, ``kwargs``...).

        Returns:
            The new operation.

        Raises:
            DanglingVariableError: An input or output id is not a variable of this trace.
            TracingError: An output already has a producer, or is also an input.
            CycleError: The edges would close a cycle.
        """
        if not isinstance(name, str) or not name:
            raise TracingError(f"operation name must be a non-empty string, got {name!r}")
        with self._lock:
            for vid in [*inputs, *outputs]:
                if vid not in self.variables:
                    raise DanglingVariableError(f"operation {name!r} refers to unknown variable id {vid!r}")
            for vid in outputs:
                prod = self.variables[vid].producer
                if prod is not None:
                    raise TracingError(
                        f"variable {vid!r} is already produced by {prod!r}; variables are immutable, "
                        f"record a new version instead"
                    )
                if vid in inputs:
                    raise CycleError(f"operation {name!r} reads and writes variable {vid!r}")
            # A cycle needs a path from an output back to an input; fresh outputs (the tracer's
            # case) have no outgoing edges, so the check costs nothing there.
            risky = [self._index[v] for v in outputs if self.graph.out_degree(self._index[v]) > 0]
            if risky:
                reach: set[int] = set()
                for n in risky:
                    reach |= set(rx.descendants(self.graph, n))
                back = [v for v in inputs if self._index[v] in reach]
                if back:
                    raise CycleError(
                        f"operation {name!r} would close a cycle: its outputs {list(outputs)} already "
                        f"flow into its input {back[0]!r}"
                    )
            oid = id or self.new_id("op")
            if oid in self._index:
                raise TracingError(f"node id {oid!r} already exists in trace {self.id}")
            if "args" not in fields and "kwargs" not in fields:
                fields["args"] = [Slot(var=v) for v in inputs]
                fields.setdefault("arg_names", [None] * len(inputs))
            op = Operation(
                id=oid, name=name, kind=kind or name, inputs=list(inputs), outputs=list(outputs), **fields
            )
            node = self.graph.add_node(("op", oid))
            self._index[oid] = node
            for vid in dict.fromkeys(inputs):
                self.graph.add_edge(self._index[vid], node, None)
            for vid in outputs:
                self.graph.add_edge(node, self._index[vid], None)
            for vid in outputs:
                self.variables[vid].producer = oid
            self.operations[oid] = op
            if handle is not None:
                self.handles[oid] = handle
            return op

    # ------------------------------------------------------------------ final answer
    @property
    def final(self) -> str | None:
        """Id of the final answer variable.

        Set explicitly, else the last output of the last top-level operation, else None.
        """
        if self._final is not None:
            return self._final
        for op in reversed(list(self.operations.values())):
            if op.parent is None and op.outputs:
                return op.outputs[-1]
        return None

    @final.setter
    def final(self, var_id: str | None) -> None:
        if var_id is not None and var_id not in self.variables:
            raise DanglingVariableError(f"final variable {var_id!r} is not in trace {self.id}")
        self._final = var_id

    def resolve(self, var_id: str) -> str:
        """Follow ``alias_of`` links: a wrapper's return value that is an inner operation's output.

        A traced wrapper (``pipeline(...)`` calling ``extract``, ``retrieve``, ``generate``)
        returns a value some nested operation produced; its output variable records that as
        ``meta["alias_of"]``, and attribution and replay work on the inner variable.
        """
        seen = {var_id}
        while True:
            nxt = self.variables[var_id].meta.get("alias_of")
            if not isinstance(nxt, str) or nxt not in self.variables or nxt in seen:
                return var_id
            seen.add(nxt)
            var_id = nxt

    @property
    def answer_var(self) -> str | None:
        """:attr:`final` resolved through wrapper aliases (see :meth:`resolve`)."""
        fid = self.final
        return None if fid is None else self.resolve(fid)

    @property
    def final_value(self) -> Any:
        """Value of :attr:`final` (None when there is none)."""
        fid = self.final
        return None if fid is None else self.variables[fid].value

    # ------------------------------------------------------------------ queries
    def variable(self, var_id: str) -> Variable:
        """The variable with this id.

        Raises:
            DanglingVariableError: No such variable.
        """
        try:
            return self.variables[var_id]
        except KeyError:
            raise DanglingVariableError(f"no variable {var_id!r} in trace {self.id}") from None

    def operation(self, op_id: str) -> Operation:
        """The operation with this id.

        Raises:
            DanglingVariableError: No such operation.
        """
        try:
            return self.operations[op_id]
        except KeyError:
            raise DanglingVariableError(f"no operation {op_id!r} in trace {self.id}") from None

    def find_operations(self, name: str) -> list[Operation]:
        """Operations called ``name``, in recording order."""
        return [op for op in self.operations.values() if op.name == name]

    def producer(self, var_id: str) -> Operation | None:
        """The operation that produced a variable (None for a source)."""
        prod = self.variable(var_id).producer
        return None if prod is None else self.operations[prod]

    def consumers(self, var_id: str) -> list[Operation]:
        """Operations that read a variable, in topological order."""
        self.variable(var_id)
        node = self._index[var_id]
        ids = {self.graph[n][1] for n in self.graph.successor_indices(node)}
        return [self.operations[o] for o in self.topological_operations() if o in ids]

    def parent_operations(self, op_id: str) -> list[str]:
        """Ids of the operations that produced this operation's inputs."""
        op = self.operation(op_id)
        out: dict[str, None] = {}
        for vid in op.inputs:
            prod = self.variables[vid].producer
            if prod is not None:
                out[prod] = None
        return list(out)

    def child_operations(self, op_id: str) -> list[str]:
        """Ids of the operations that read this operation's outputs."""
        op = self.operation(op_id)
        out: dict[str, None] = {}
        for vid in op.outputs:
            for c in self.consumers(vid):
                out[c.id] = None
        return list(out)

    def _ops_among(self, nodes: Iterable[int]) -> set[str]:
        return {self.graph[n][1] for n in nodes if self.graph[n][0] == "op"}

    def ancestor_operations(self, node_id: str) -> list[str]:
        """Operations upstream of a variable or operation, in topological order."""
        if node_id not in self._index:
            raise DanglingVariableError(f"no node {node_id!r} in trace {self.id}")
        ids = self._ops_among(rx.ancestors(self.graph, self._index[node_id]))
        return [o for o in self.topological_operations() if o in ids]

    def descendant_operations(self, node_id: str) -> list[str]:
        """Operations downstream of a variable or operation, in topological order."""
        if node_id not in self._index:
            raise DanglingVariableError(f"no node {node_id!r} in trace {self.id}")
        ids = self._ops_among(rx.descendants(self.graph, self._index[node_id]))
        return [o for o in self.topological_operations() if o in ids]

    def topological_operations(self) -> list[str]:
        """All operation ids in a topological order (ties broken by recording order)."""
        order = {oid: i for i, oid in enumerate(self.operations)}
        with self._lock:
            nodes = rx.lexicographical_topological_sort(
                self.graph, key=lambda payload: f"{order.get(payload[1], -1):09d}{payload[1]}"
            )
        return [p[1] for p in nodes if p[0] == "op"]

    def sources(self) -> list[str]:
        """Variables no operation produced."""
        return [v.id for v in self.variables.values() if v.producer is None]

    def edges(self) -> list[tuple[str, str]]:
        """All edges as ``(from_id, to_id)`` pairs, sorted."""
        return sorted((self.graph[a][1], self.graph[b][1]) for a, b in self.graph.edge_list())

    def node_index(self, node_id: str) -> int:
        """The rustworkx node index of a variable or operation id.

        Raises:
            DanglingVariableError: No such node.
        """
        try:
            return self._index[node_id]
        except KeyError:
            raise DanglingVariableError(f"no node {node_id!r} in trace {self.id}") from None

    def operation_label(self, op_id: str) -> str:
        """A stable label ``name#k`` (the k-th operation of that name in recording order)."""
        op = self.operation(op_id)
        k = [o.id for o in self.find_operations(op.name)].index(op_id)
        return f"{op.name}#{k}"

    def __len__(self) -> int:
        return len(self.variables) + len(self.operations)

    def __repr__(self) -> str:
        return f"Trace({self.id!r}, name={self.name!r}, variables={len(self.variables)}, operations={len(self.operations)})"
