"""Content hashes of skills and fingerprints of encoders, recorded in a saved index.

* :func:`skill_hash` — a 64-bit BLAKE2b of a skill's canonical JSON (id, name, description,
  body, category, metadata). ``save`` records one per skill, in index order, plus
  :func:`order_hash` of the sequence; ``load`` recomputes them, so an edited or shuffled
  ``skills.jsonl`` is an :class:`~zjulab.skillrouter.errors.IndexIntegrityError`, and
  ``upsert`` re-encodes exactly the skills whose hash changed.
* :func:`encoder_fingerprint` — what identifies the encoder's function, not just its name: a
  BLAKE2b of its weights when it exposes a torch module (``encoder.model``), the hub revision
  when the loader recorded one, and always the embeddings of three fixed probe texts (works
  for any encoder, served ones included). :func:`fingerprint_mismatch` compares two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from zjulab.skillrouter.skill import Skill

__all__ = ["PROBE_TEXTS", "encoder_fingerprint", "fingerprint_mismatch", "order_hash", "skill_hash"]

PROBE_TEXTS = (
    "merge two PDF files into one document",
    "rotate nginx access logs and compress them",
    "fine-tune an embedding model with contrastive loss",
)
"""Texts every fingerprint encodes; their vectors must agree (cosine >= :data:`PROBE_MIN_COSINE`)."""

PROBE_MIN_COSINE = 0.9999
"""Probe vectors of the same weights agree to ~1e-7; a changed checkpoint moves them further."""


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def skill_hash(skill: Skill) -> str:
    """16 hex digits identifying a skill's full content (every field, metadata included)."""
    d = skill.to_dict()
    blob = json.dumps(_canonical(d), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=8).hexdigest()


def order_hash(hashes: Sequence[str]) -> str:
    """A hash of the skill hashes in index order (detects a shuffled store)."""
    return hashlib.blake2b("\n".join(hashes).encode("ascii"), digest_size=16).hexdigest()


def _weights_hash(module: Any) -> str | None:
    state = getattr(module, "state_dict", None)
    if not callable(state):
        return None
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(state().items()):
        h.update(name.encode("utf-8"))
        t = tensor.detach()
        h.update(str(tuple(t.shape)).encode("ascii"))
        h.update(str(t.dtype).encode("ascii"))
        h.update(t.contiguous().cpu().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def encoder_fingerprint(encoder: Any, encode: Any = None) -> dict[str, Any]:
    """Identify an encoder's function: weights hash, hub revision, probe embeddings.

    Args:
        encoder: Any :class:`~zjulab.common.protocols.TextEncoder`.
        encode: The callable to embed the probes with (default ``encoder.encode``); the router
            passes its locked wrapper.
    """
    fp: dict[str, Any] = {}
    module = getattr(encoder, "model", None)
    if module is not None and hasattr(module, "state_dict"):
        fp["weights_blake2b"] = _weights_hash(module)
        dtypes = sorted({str(t.dtype) for t in module.state_dict().values()})
        fp["weights_dtype"] = ",".join(dtypes)
    revision = getattr(encoder, "revision", None) or getattr(
        getattr(module, "config", None), "_commit_hash", None
    )
    if revision:
        fp["revision"] = str(revision)
    vecs = np.asarray((encode or encoder.encode)(list(PROBE_TEXTS)), dtype=np.float32)
    fp["probe"] = [[round(float(x), 6) for x in row] for row in vecs]
    return fp


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Why two fingerprints name different encoders, or ``None`` when they agree."""
    same_dtype = saved.get("weights_dtype") == current.get("weights_dtype")
    keys = ("weights_blake2b", "revision") if same_dtype else ("revision",)
    for key in keys:
        if saved.get(key) and current.get(key) and saved[key] != current[key]:
            return f"{key} {saved[key]} != {current[key]}"
    # the same weights in another dtype (bf16 on GPU, fp32 on CPU) embed slightly differently
    min_cos = PROBE_MIN_COSINE if same_dtype else 0.99
    a, b = saved.get("probe"), current.get("probe")
    if a is None or b is None:
        return None
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape:
        return f"probe embeddings have shape {va.shape} vs {vb.shape}"
    na = np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1)
    cos = np.where(na > 0, (va * vb).sum(axis=1) / np.where(na > 0, na, 1.0), 1.0)
    if (cos < min_cos).any():
        return f"probe embeddings moved (cosine {cos.min():.6f} < {min_cos})"
    return None
