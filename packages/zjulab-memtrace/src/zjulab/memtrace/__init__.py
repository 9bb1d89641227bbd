"""zjulab.memtrace: trace memory evolution in LLM memory pipelines and attribute failures (MemTrace)."""

from zjulab.memtrace.attribution import (
    Attribution,
    DecisiveError,
    ReplayEvidence,
    attribute,
    attribute_all_at_once,
    last_operation,
    random_operation,
)
from zjulab.memtrace.config import AttributionConfig, BenchConfig, PipelineConfig
from zjulab.memtrace.errors import (
    CycleError,
    DanglingVariableError,
    MemTraceError,
    OutputExistsError,
    ReplayError,
    TraceFileError,
    TraceSchemaError,
    TracingError,
)
from zjulab.memtrace.gold import Gold
from zjulab.memtrace.graph import Operation, Slot, Trace, Variable
from zjulab.memtrace.judges import (
    ChatJudge,
    Corrector,
    EvidenceCorrector,
    EvidenceJudge,
    Judge,
    PredicateJudge,
    ReferenceJudge,
    Verdict,
)
from zjulab.memtrace.redaction import Redactor
from zjulab.memtrace.replay import ReplayResult, replay
from zjulab.memtrace.store import load_trace, save_trace
from zjulab.memtrace.taxonomy import DEFAULT_TAXONOMY, FailureMode, Taxonomy
from zjulab.memtrace.tracer import Tracer

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TAXONOMY",
    "Attribution",
    "AttributionConfig",
    "BenchConfig",
    "ChatJudge",
    "Corrector",
    "CycleError",
    "DanglingVariableError",
    "DecisiveError",
    "EvidenceCorrector",
    "EvidenceJudge",
    "FailureMode",
    "Gold",
    "Judge",
    "MemTraceError",
    "Operation",
    "OutputExistsError",
    "PipelineConfig",
    "PredicateJudge",
    "Redactor",
    "ReferenceJudge",
    "ReplayError",
    "ReplayEvidence",
    "ReplayResult",
    "Slot",
    "Taxonomy",
    "Trace",
    "TraceFileError",
    "TraceSchemaError",
    "Tracer",
    "TracingError",
    "Variable",
    "Verdict",
    "attribute",
    "attribute_all_at_once",
    "last_operation",
    "load_trace",
    "random_operation",
    "replay",
    "save_trace",
]
