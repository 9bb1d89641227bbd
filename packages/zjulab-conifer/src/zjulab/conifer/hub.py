"""Publishing an exported dataset on the Hugging Face Hub, with a dataset card.

:func:`push_to_hub` first writes, into a folder of its own, exactly what it would upload: a
``README.md`` dataset card (YAML metadata that the Hub reads: licence, task, size, the data
files; then how the data was made) and ``data/train.jsonl``. With ``dry_run`` it stops there,
which works offline; otherwise it uploads that folder with ``huggingface_hub``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zjulab.common.io import atomic_write_text, write_jsonl
from zjulab.conifer.errors import ConiferInputError

__all__ = ["dataset_card", "push_to_hub"]


def _size_category(n: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < limit:
            return label
    return "n>1M"


def dataset_card(
    repo_id: str,
    n_rows: int,
    *,
    kind: str = "sft",
    manifest: Mapping[str, Any] | None = None,
    license: str = "other",
    partial: bool = False,
) -> str:
    """The ``README.md`` of the dataset repository (YAML header + description)."""
    manifest = dict(manifest or {})
    config = manifest.get("config", {})
    models = manifest.get("models", {})
    header = [
        "---",
        f"license: {license}",
        "language:",
        "- en",
        "task_categories:",
        "- text-generation",
        "tags:",
        "- instruction-following",
        "- conifer",
        "- " + ("dpo" if kind == "dpo" else "sft"),
        "size_categories:",
        f"- {_size_category(n_rows)}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train.jsonl",
        "---",
    ]
    fmt = (
        "`prompt` / `chosen` / `rejected` (TRL's conversational preference format)"
        if kind == "dpo"
        else "`messages` (TRL's conversational format)"
    )
    body = [
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        "Complex-constraint instruction data curated with zjulab-conifer, after *Conifer: Improving "
        "Complex Constrained Instruction-Following Ability of Large Language Models* (Sun et al., 2024).",
        "",
        f"- rows: {n_rows}, one column group: {fmt}",
        f"- curation mode: `{config.get('mode', '?')}`, difficulty levels: {config.get('num_levels', '?')}",
        f"- strong model: `{models.get('strong', '?')}`; weak model: `{models.get('weak') or 'none'}`",
        f"- seeds: {manifest.get('seeds', {}).get('count', '?')}",
        f"- contaminated instructions dropped: {manifest.get('contaminated', 0)}",
    ]
    if partial:
        body += ["", "**Partial export**: the curation run was not finished when this was exported."]
    return "\n".join(header + body) + "\n"


def push_to_hub(
    rows: Sequence[Mapping[str, Any]],
    repo_id: str,
    folder: str | os.PathLike[str],
    *,
    kind: str = "sft",
    manifest: Mapping[str, Any] | None = None,
    license: str = "other",
    private: bool = True,
    partial: bool = False,
    dry_run: bool = False,
    token: str | None = None,
) -> Path:
    """Write the dataset card and data into ``folder``, then (unless ``dry_run``) upload them.

    Args:
        rows: Exported rows (SFT ``messages`` or DPO pairs).
        repo_id: ``user/name`` of the dataset repository.
        folder: A new or empty directory for the files (never one with other files in it).
        kind: ``"sft"`` or ``"dpo"``, for the card.
        manifest: The run's ``manifest.json``, for the card.
        license: Licence id for the card's metadata.
        private: Create the repository as private.
        partial: Label the card as a partial export.
        dry_run: Only write the files (offline).
        token: Hub token (default: ``huggingface_hub``'s login).

    Returns:
        The folder.

    Raises:
        ConiferInputError: Bad ``repo_id``, or ``folder`` holds files this function did not write.
        MissingDependencyError: ``huggingface_hub`` is not installed (upload only).
    """
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConiferInputError(f"repo_id must be 'owner/name', got {repo_id!r}")
    out = Path(folder)
    ours = {"README.md", "data", "data/train.jsonl", ".zjulab-conifer-hub"}
    if out.exists():
        present = {str(p.relative_to(out)) for p in out.rglob("*")}
        if present - ours:
            raise ConiferInputError(
                f"{out}: holds other files ({sorted(present - ours)[:3]}); use an empty folder"
            )
    (out / "data").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / ".zjulab-conifer-hub", json.dumps({"repo_id": repo_id}) + "\n")
    n = write_jsonl(out / "data" / "train.jsonl", rows)
    atomic_write_text(
        out / "README.md",
        dataset_card(repo_id, n, kind=kind, manifest=manifest, license=license, partial=partial),
    )
    if dry_run:
        return out
    from zjulab.common.deps import require

    hub = require("huggingface_hub", "pip install 'zjulab-conifer[train]'", feature="push_to_hub")
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(out),
        allow_patterns=["README.md", "data/*"],
        commit_message=f"zjulab-conifer export ({n} rows)",
    )
    return out
