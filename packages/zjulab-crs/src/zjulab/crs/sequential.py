"""Task 3 baseline: SASRec, the self-attentive sequential recommender, trained by hopwise.

U-NEED's recommendation baselines include behaviour-sequence recommenders fed from the
user-behaviour resource. :class:`SASRecRanker` trains RecBole's SASRec (Kang and McAuley, ICDM
2018) through hopwise, the maintained RecBole fork (``pip install 'zjulab-crs[sasrec]'``): the
behaviour log becomes a RecBole atomic ``.inter`` file, RecBole's sequential dataset augments
every user's sequence into (prefix → next item) cases, and hopwise's ``Trainer`` optimises the
model with its own loss (cross-entropy over all items by default). Candidates are then scored
as RecBole's ``full_sort_predict`` does: the dot product of the sequence representation of the
example's behaviour history with each candidate's item embedding.

hopwise changes process-wide state while it configures and trains (it reads ``--key=value``
pairs from ``sys.argv``, sets ``CUDA_VISIBLE_DEVICES``, adds removed names back into NumPy's
namespace, adds a resolver to PyYAML's ``FullLoader``, reseeds the global random generators, sets
environment variables and warning filters when imported, and writes ``log_tensorboard/`` and
``saved/`` into the working directory). Every call into it runs inside
:func:`_confined`, which restores each of these afterwards and runs hopwise in a scratch
directory, under a module lock; the working directory is process-wide, so do not train two
SASRec models from two threads while other threads depend on it.

Only what happened before an example may be used: training sequences hold the behaviour log
and the training examples' recommended items, and every behaviour of a user at or after the
time of that user's earliest example passed in ``fit(..., exclude=...)`` (the examples that
will be evaluated) is left out.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zjulab.common.deps import require
from zjulab.common.device import resolve_device
from zjulab.crs.config import SASRecConfig
from zjulab.crs.dialogue import Behaviour, Item, canonical_time, latest_time
from zjulab.crs.errors import DataFormatError, NotTrainedError
from zjulab.crs.recommendation import CandidateRanker
from zjulab.crs.samples import RecommendationExample
from zjulab.crs.training import TrainHistory

__all__ = ["SASREC_EXTRA", "SASRecRanker"]

logger = logging.getLogger(__name__)

#: The install line of the optional SASRec baseline.
SASREC_EXTRA = "pip install 'zjulab-crs[sasrec]'"

_LOCK = threading.Lock()
# Names hopwise's Config adds to NumPy's namespace (removed in NumPy 2 / 1.24).
_NUMPY_NAMES = ("bool", "int", "float", "complex", "object", "str", "unicode", "unicode_", "long", "string_")
_MISSING = object()


@contextlib.contextmanager
def _confined(workdir: Path) -> Iterator[None]:
    """Run hopwise with every process-wide change it makes undone afterwards."""
    import yaml

    with _LOCK:
        argv = sys.argv
        cwd = os.getcwd()
        environ = dict(os.environ)
        np_names = {n: np.__dict__.get(n, _MISSING) for n in _NUMPY_NAMES}
        resolvers = yaml.FullLoader.__dict__.get("yaml_implicit_resolvers", _MISSING)
        resolvers = copy.deepcopy(resolvers) if resolvers is not _MISSING else _MISSING
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            sys.argv = [argv[0] if argv else "zjulab-crs"]
            os.chdir(workdir)
            with warnings.catch_warnings():  # restores the filters hopwise adds on import
                # RecBole's dataset turns read-only arrays into tensors (copied: harmless)
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                yield
        finally:
            sys.argv = argv
            os.chdir(cwd)
            for key in set(os.environ) - set(environ):
                del os.environ[key]
            for key, value in environ.items():
                if os.environ.get(key) != value:
                    os.environ[key] = value
            for name, value in np_names.items():
                if value is _MISSING:
                    np.__dict__.pop(name, None)
                else:
                    setattr(np, name, value)
            if resolvers is _MISSING:
                if "yaml_implicit_resolvers" in yaml.FullLoader.__dict__:
                    delattr(yaml.FullLoader, "yaml_implicit_resolvers")
            else:
                yaml.FullLoader.yaml_implicit_resolvers = resolvers
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
            root.handlers[:] = handlers
            root.setLevel(level)


def _hopwise() -> Any:
    """Import hopwise's pieces (call inside :func:`_confined`)."""
    from hopwise.config import Config
    from hopwise.data import create_dataset, data_preparation
    from hopwise.model.sequential_recommender import SASRec
    from hopwise.trainer import Trainer

    return Config, create_dataset, data_preparation, SASRec, Trainer


_SCRATCH = "zjulab-crs-sasrec-"


def _remove_stale_scratch() -> None:
    """Remove scratch directories of SASRec runs whose process is gone (killed mid-fit).

    Only directories this module names (``zjulab-crs-sasrec-PID-*`` in the temp directory) are
    touched, and only when no process with that id runs.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{_SCRATCH}*-*"):
        pid_text = path.name[len(_SCRATCH) :].split("-", 1)[0]
        if not pid_text.isdigit() or not path.is_dir() or path.is_symlink():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed the scratch directory %s of a SASRec run that did not finish", path)
        except (PermissionError, OSError):
            continue  # alive (another user's), or not ours to judge


def _gpu_ids() -> str:
    """The ``gpu_id`` that leaves ``CUDA_VISIBLE_DEVICES`` as this process already sees it."""
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    if current is not None:
        return current
    return ",".join(str(i) for i in range(torch.cuda.device_count()))


class SASRecRanker(CandidateRanker):
    """SASRec over the behaviour log, as a task-3 ranker (needs the ``sasrec`` extra).

    ``fit`` builds each user's event sequence from ``behaviours`` and the training examples'
    recommended items (each at its example's time), oldest first, and trains SASRec with
    hopwise. ``scores`` encodes an example's ``history`` (its user's behaviours before the
    recommendation, oldest first; the last ``max_seq_length`` items the model knows) and scores
    each candidate by the dot product with its item embedding. A candidate the training
    sequences never contain scores 1 below the example's lowest known candidate (all such
    candidates tie there); an example whose history holds no known item gives
    every candidate ``0.0`` (all tied: counted by ``evaluate``'s ``all_tied``). The needs and
    the dialogue are not used: SASRec is the behaviour-only baseline.

    Args:
        items: Item knowledge by id (only the ids are used).
        behaviours: The behaviour log.
        config: Model and training settings (RecBole's SASRec defaults).
    """

    task = "recommendation"

    def __init__(
        self,
        items: Mapping[str, Item],
        behaviours: Sequence[Behaviour] = (),
        config: SASRecConfig | None = None,
    ) -> None:
        self.items = items
        self.behaviours = list(behaviours)
        self.config = config or SASRecConfig()
        self.model: Any = None
        self._ids: dict[str, int] = {}
        self._device = torch.device("cpu")

    def sequences(
        self, examples: Sequence[RecommendationExample] = (), exclude: Sequence[RecommendationExample] = ()
    ) -> dict[str, list[str]]:
        """The training sequences :meth:`fit` would use: item ids per user, oldest first.

        Events are ordered by time, then item id (as :func:`~zjulab.crs.samples.build_task_samples`
        orders a history). An evaluated user (one of ``exclude``) keeps only events that
        certainly happened before its earliest excluded example: none with an unknown time,
        none dated to that example's day by a date alone.

        Raises:
            DataFormatError: A behaviour's or example's time is not a valid time stamp.
        """
        cutoff: dict[str, str] = {}
        for e in exclude:
            when = canonical_time(e.time, f"excluded example {e.sid or e.user_id}")
            if not e.user_id:
                continue
            prev = cutoff.get(e.user_id)
            if not when:
                cutoff[e.user_id] = ""  # unknown time: nothing of this user can be placed before it
            elif prev is None or (prev and when < prev):
                cutoff[e.user_id] = when
        # (order key, item, latest moment): ordered as build_task_samples orders a history
        # (time, then item id); compared with a cutoff by the latest moment a stamp may mean
        events: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for b in self.behaviours:
            where = f"behaviour of user {b.user_id} on item {b.item_id}"
            events[b.user_id].append((canonical_time(b.time, where), b.item_id, latest_time(b.time, where)))
        skipped = 0
        for e in examples:
            when = canonical_time(e.time, f"recommendation example {e.sid or e.user_id}")
            if not e.user_id or not when:
                skipped += 1
                continue
            for target in e.targets:
                events[e.user_id].append((when, target, when))
        if skipped:
            logger.info("SASRec: %d training examples without user or time were not used", skipped)
        out = {}
        for user, evs in events.items():
            evs.sort(key=lambda x: (x[0], x[1]))
            if user in cutoff:
                # an evaluated user: only what certainly happened before its first test time
                limit = cutoff[user]
                kept = [item for _, item, latest in evs if latest and limit and latest < limit]
            else:
                kept = [item for _, item, _ in evs]
            if kept:
                out[user] = kept
        return out

    def fit(
        self, examples: Sequence[RecommendationExample] = (), *, exclude: Sequence[RecommendationExample] = ()
    ) -> TrainHistory:
        """Train SASRec on the behaviour log (and ``examples``' recommended items).

        Args:
            examples: Training examples; their targets join their users' sequences.
            exclude: Examples to be evaluated later: each one's user contributes nothing at or
                after its time (their targets are never read).

        Raises:
            MissingDependencyError: hopwise is not installed (names the install line).
            DataFormatError: No user has two events to learn a next item from.
        """
        require("hopwise", SASREC_EXTRA, feature="SASRecRanker")
        cfg = self.config
        seqs = self.sequences(examples, exclude)
        cases = sum(len(s) - 1 for s in seqs.values())
        if cases < 1:
            raise DataFormatError(
                f"SASRec needs a user with at least two behaviours to learn from; the "
                f"{len(self.behaviours)} behaviour(s) and {len(examples)} example(s) given hold "
                f"{len(seqs)} user sequence(s) and no (prefix, next item) case"
            )
        vocab = list(dict.fromkeys(item for s in seqs.values() for item in s))
        index = {item: k for k, item in enumerate(vocab)}
        device = resolve_device(cfg.device)
        history = TrainHistory()
        start = time.perf_counter()
        _remove_stale_scratch()
        with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH}{os.getpid()}-") as tmp:
            root = Path(tmp)
            (root / "data" / "uneed").mkdir(parents=True)
            # Users and items are written as their positions, so no id can break the tab format.
            with open(root / "data" / "uneed" / "uneed.inter", "w", encoding="utf-8") as f:
                f.write("user_id:token\titem_id:token\ttimestamp:float\n")
                for u, items in enumerate(seqs.values()):
                    for t, item in enumerate(items):
                        f.write(f"{u}\t{index[item]}\t{t}\n")
            settings = {
                "data_path": str(root / "data"),
                "checkpoint_dir": str(root / "saved"),
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "user_inter_num_interval": "[0,inf)",
                "item_inter_num_interval": "[0,inf)",
                "MAX_ITEM_LIST_LENGTH": cfg.max_seq_length,
                # every case trains: no validation split, no validation pass
                "eval_args": {
                    "split": {"RS": [1.0, 0.0, 0.0]},
                    "order": "TO",
                    "group_by": "user",
                    "mode": "full",
                },
                "train_neg_sample_args": None
                if cfg.loss_type == "CE"
                else {"distribution": "uniform", "sample_num": 1},
                "loss_type": cfg.loss_type,
                "n_layers": cfg.n_layers,
                "n_heads": cfg.n_heads,
                "hidden_size": cfg.hidden_size,
                "inner_size": cfg.inner_size,
                "hidden_dropout_prob": cfg.hidden_dropout_prob,
                "attn_dropout_prob": cfg.attn_dropout_prob,
                "hidden_act": cfg.hidden_act,
                "layer_norm_eps": cfg.layer_norm_eps,
                "initializer_range": cfg.initializer_range,
                "epochs": cfg.epochs,
                "train_batch_size": cfg.batch_size,
                "learning_rate": cfg.learning_rate,
                "weight_decay": cfg.weight_decay,
                "seed": cfg.seed,
                "reproducibility": True,
                "show_progress": False,
                "log_wandb": False,
                "save_dataset": False,
                "save_dataloaders": False,
                "gpu_id": _gpu_ids(),
            }
            with _confined(root):
                # imported here: importing hopwise reseeds Python's RNG, adds warning filters
                # and sets environment variables, all undone when the block ends
                Config, create_dataset, data_preparation, SASRec, Trainer = _hopwise()
                config = Config(model="SASRec", dataset="uneed", config_dict=settings)
                config["device"] = device
                from hopwise.utils import init_seed

                init_seed(cfg.seed, True)
                dataset = create_dataset(config)
                train_data, _, _ = data_preparation(config, dataset)
                model = SASRec(config, train_data.dataset).to(device)
                trainer = Trainer(config, model)
                trainer.fit(train_data, None, verbose=False, saved=False, show_progress=False)
                batches = max(1, len(train_data))
                history.losses = [float(v) / batches for _, v in sorted(trainer.train_loss_dict.items())]
                history.examples = cases * cfg.epochs
                self._ids = {item: int(dataset.token2id("item_id", str(k))) for item, k in index.items()}
                tb = getattr(trainer, "tensorboard", None)
                if tb is not None:
                    tb.close()
        model.eval()
        self.model = model
        self._device = device
        history.seconds = time.perf_counter() - start
        logger.info(
            "SASRec: %d users, %d items, %d cases, %d epochs, loss %.4f -> %.4f",
            len(seqs),
            len(vocab),
            cases,
            cfg.epochs,
            history.losses[0],
            history.losses[-1],
        )
        return history

    @torch.no_grad()
    def scores(self, examples: Sequence[RecommendationExample]) -> list[list[float]]:
        """Each example's candidate scores, in candidate order."""
        if self.model is None:
            raise NotTrainedError("SASRecRanker: fit() first")
        cap = self.config.max_seq_length
        seqs = [[self._ids[i] for i in e.history if i in self._ids][-cap:] for e in examples]
        out: list[list[float]] = []
        weight = self.model.item_embedding.weight
        for start in range(0, len(examples), 256):
            part = list(range(start, min(start + 256, len(examples))))
            known = [j for j in part if seqs[j]]
            reps: dict[int, torch.Tensor] = {}
            if known:
                width = max(len(seqs[j]) for j in known)
                batch = torch.zeros(len(known), width, dtype=torch.long)
                for row, j in enumerate(known):
                    batch[row, : len(seqs[j])] = torch.tensor(seqs[j], dtype=torch.long)
                lengths = torch.tensor([len(seqs[j]) for j in known], dtype=torch.long)
                rep = self.model.forward(batch.to(self._device), lengths.to(self._device))
                reps = {j: rep[row] for row, j in enumerate(known)}
            for j in part:
                e = examples[j]
                if j not in reps:
                    out.append([0.0] * len(e.candidates))
                    continue
                ids = [self._ids.get(c, 0) for c in e.candidates]
                vals = (weight[torch.tensor(ids, dtype=torch.long, device=weight.device)] @ reps[j]).tolist()
                known_vals = [v for c, v in zip(e.candidates, vals) if c in self._ids]
                floor = min(known_vals) - 1.0 if known_vals else 0.0
                out.append([v if c in self._ids else floor for c, v in zip(e.candidates, vals)])
        return out

    @property
    def tie_seed(self) -> int:
        """Seed of the tie order."""
        return self.config.seed
