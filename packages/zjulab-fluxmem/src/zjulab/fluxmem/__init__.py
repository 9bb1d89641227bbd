"""zjulab.fluxmem: a connectivity-evolving memory graph for LLM agents (FluxMem).

Memory is a heterogeneous graph of episodic, semantic and procedural units. Writes form
connections by a hybrid score (Stage I), task feedback repairs them (Stage II: expand, prune,
reshape), and successful trajectories consolidate into procedural circuits guided by PEMS
(Stage III).
"""

from zjulab.fluxmem.async_memory import AsyncFluxMemory
from zjulab.fluxmem.clustering import kmeans, num_clusters
from zjulab.fluxmem.config import FluxMemConfig
from zjulab.fluxmem.consolidation import ConsolidationReport, SkillReport
from zjulab.fluxmem.errors import (
    DatasetError,
    FluxMemConfigError,
    FluxMemError,
    FluxStoreEncoderError,
    FluxStoreError,
    FluxStoreIndexError,
    FluxStoreVersionError,
    MemoryInputError,
    MemoryNotFoundError,
    ScopeError,
)
from zjulab.fluxmem.locomo import FlatRAG, LocomoReport, evaluate_locomo, load_locomo
from zjulab.fluxmem.memory import FluxMemory, scope_filter, scope_key, validate_metadata
from zjulab.fluxmem.migrate import migrate_jsonl_store
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode
from zjulab.fluxmem.pems import PEMSTracker, pems, skill_delta
from zjulab.fluxmem.reasoner import MemoryReasoner
from zjulab.fluxmem.refinement import FeedbackReport, RepairRound
from zjulab.fluxmem.scoring import hybrid_scores, minmax
from zjulab.fluxmem.store import SQLGraph, SQLiteStore, VectorCache

__version__ = "0.1.0"

__all__ = [
    "AsyncFluxMemory",
    "ConsolidationReport",
    "DatasetError",
    "FeedbackReport",
    "FlatRAG",
    "FluxMemConfig",
    "FluxMemConfigError",
    "FluxMemError",
    "FluxMemory",
    "FluxStoreEncoderError",
    "FluxStoreError",
    "FluxStoreIndexError",
    "FluxStoreVersionError",
    "LocomoReport",
    "MemoryEdge",
    "SQLGraph",
    "SQLiteStore",
    "MemoryInputError",
    "MemoryNode",
    "MemoryNotFoundError",
    "MemoryReasoner",
    "PEMSTracker",
    "RepairRound",
    "ScopeError",
    "SkillReport",
    "VectorCache",
    "evaluate_locomo",
    "hybrid_scores",
    "kmeans",
    "load_locomo",
    "minmax",
    "num_clusters",
    "pems",
    "migrate_jsonl_store",
    "scope_filter",
    "scope_key",
    "validate_metadata",
    "skill_delta",
]
