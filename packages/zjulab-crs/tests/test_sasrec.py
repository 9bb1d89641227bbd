"""SASRec baseline through hopwise: training data, protocol, confinement of hopwise's side effects."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zjulab.common.errors import MissingDependencyError
from zjulab.crs.config import SASRecConfig
from zjulab.crs.dialogue import Behaviour
from zjulab.crs.errors import CrsConfigError, DataFormatError, NotTrainedError
from zjulab.crs.samples import RecommendationExample
from zjulab.crs.sequential import SASREC_EXTRA, SASRecRanker

ITEMS = [f"i{k}" for k in range(12)]
SMALL = {
    "n_layers": 1,
    "n_heads": 1,
    "hidden_size": 32,
    "inner_size": 64,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.1,
    "max_seq_length": 8,
    "epochs": 40,
    "batch_size": 256,
    "learning_rate": 0.01,
    "device": "cpu",
}


def _b(user: str, item: str, day: int, hour: int = 0) -> Behaviour:
    return Behaviour("s1", user, item, f"2024-01-{day:02d} {hour:02d}:00:00")


def _ex(user: str, history: list[str], target: str, time: str, candidates: list[str] | None = None):
    return RecommendationExample(
        needs=[],
        history=history,
        candidates=list(ITEMS) if candidates is None else candidates,
        targets=[target],
        user_id=user,
        time=time,
    )


def _walk_log(users: int = 60, length: int = 7) -> list[Behaviour]:
    """Every user walks the item cycle i0 -> i1 -> ... -> i11 -> i0 from a random start."""
    rng = random.Random(0)
    log = []
    for u in range(users):
        start = rng.randrange(len(ITEMS))
        log += [_b(f"u{u}", ITEMS[(start + t) % len(ITEMS)], 1 + t) for t in range(length)]
    return log


def test_missing_extra_names_the_install_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "hopwise", None)
    ranker = SASRecRanker({}, _walk_log(3))
    with pytest.raises(MissingDependencyError) as err:
        ranker.fit()
    assert err.value.install == SASREC_EXTRA == "pip install 'zjulab-crs[sasrec]'"
    assert "SASRecRanker" in str(err.value)


def test_sequences_are_time_ordered_and_hold_the_training_targets():
    log = [_b("a", "i2", 3), _b("a", "i1", 1), _b("b", "i5", 2), _b("a", "i3", 3)]
    train = [_ex("a", ["i1"], "i9", "2024-01-02 00:00:00"), _ex("", [], "i7", "2024-01-02 00:00:00")]
    seqs = SASRecRanker({}, log).sequences(train)
    # same time stamp (day 3): the order in which the behaviours were given
    assert seqs == {"a": ["i1", "i9", "i2", "i3"], "b": ["i5"]}


def test_excluded_examples_cut_their_users_history_at_their_time():
    log = [_b("a", "i1", 1), _b("a", "i2", 2), _b("a", "i3", 3), _b("a", "i4", 4), _b("b", "i5", 5)]
    held = [_ex("a", ["i1", "i2"], "i3", "2024-01-03 00:00:00"), _ex("a", [], "i4", "2024-01-04 00:00:00")]
    seqs = SASRecRanker({}, log).sequences(exclude=held)
    assert seqs == {"a": ["i1", "i2"], "b": ["i5"]}  # from day 3 on (the earliest held example) nothing
    # a held example without a time: none of its user's behaviours can be placed before it
    unknown = [_ex("b", [], "i5", "")]
    assert SASRecRanker({}, log).sequences(exclude=unknown) == {"a": ["i1", "i2", "i3", "i4"]}


def test_bad_times_are_typed_errors():
    with pytest.raises(DataFormatError, match="behaviour of user a on item i1"):
        SASRecRanker({}, [Behaviour("s", "a", "i1", "yesterday")]).sequences()


def test_a_log_without_a_next_item_case_is_a_typed_error():
    pytest.importorskip("hopwise")
    # like the real U-NEED sample: two behaviours of two users
    with pytest.raises(DataFormatError, match="at least two behaviours"):
        SASRecRanker({}, [_b("a", "i1", 1), _b("b", "i2", 1)], SASRecConfig(**SMALL)).fit()


def test_scores_before_fit_are_refused():
    with pytest.raises(NotTrainedError):
        SASRecRanker({}, []).scores([_ex("a", ["i1"], "i2", "2024-02-01 00:00:00")])


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden_size": 30, "n_heads": 4},
        {"epochs": 0},
        {"max_seq_length": 2.5},
        {"hidden_dropout_prob": 1.0},
        {"hidden_act": "elu"},
        {"loss_type": "ce"},
        {"learning_rate": 0.0},
    ],
)
def test_config_is_validated(bad: dict):
    with pytest.raises(CrsConfigError):
        SASRecConfig(**bad)


@pytest.fixture(scope="module")
def trained() -> tuple[SASRecRanker, dict]:
    pytest.importorskip("hopwise")
    before = {
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "cwd_files": sorted(os.listdir(".")),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "np": {n: n in np.__dict__ for n in ("float", "int", "long", "object", "unicode")},
    }
    sys.argv = [*before["argv"], "--epochs=1", "--hidden_size=8"]  # hopwise reads these unless confined
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    try:
        ranker = SASRecRanker({}, _walk_log(), SASRecConfig(**SMALL))
        history = ranker.fit()
    finally:
        sys.argv = before["argv"]
    before["history"] = history
    before["random_after"] = random.random()
    before["expected_random"] = expected_next
    return ranker, before


def test_hopwise_leaves_the_process_as_it_found_it(trained):
    ranker, before = trained
    assert len(before["history"].losses) == SMALL["epochs"]  # "--epochs=1" in sys.argv was not read
    assert ranker.model.item_embedding.weight.shape[1] == SMALL["hidden_size"]
    assert os.getcwd() == before["cwd"]
    assert sorted(os.listdir(".")) == before["cwd_files"]  # no log_tensorboard/ or saved/ here
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before["cuda"]
    assert {n: n in np.__dict__ for n in before["np"]} == before["np"]
    assert before["random_after"] == before["expected_random"]  # global RNG state restored


def test_training_lowers_the_loss_and_learns_the_next_item(trained):
    ranker, before = trained
    losses = before["history"].losses
    assert losses[-1] < 0.5 * losses[0]
    # a held-out user on the cycle: the next item after i3, i4, i5 is i6
    tests = [
        _ex("new", [ITEMS[(s + t) % 12] for t in range(3)], ITEMS[(s + 3) % 12], "2024-03-01 00:00:00")
        for s in range(12)
    ]
    top1 = [r[0] for r in ranker.rank(tests)]
    assert sum(t == e.targets[0] for t, e in zip(top1, tests)) >= 10
    scores = ranker.evaluate(tests)
    assert scores["hit@10"] == 1.0 and scores["mrr@10"] > 0.8 and scores["all_tied"] == 0


def test_unknown_candidates_rank_last_and_an_unknown_history_ties_all(trained):
    ranker, _ = trained
    ex = _ex("new", ["i0", "i1"], "i2", "2024-03-01 00:00:00", candidates=["zz", "i2", "i7", "yy"])
    (sc,) = ranker.scores([ex])
    known = [sc[1], sc[2]]
    assert sc[0] == sc[3] == min(known) - 1.0
    assert ranker.rank([ex])[0][:1] == ["i2"]
    (flat,) = ranker.scores([_ex("new", ["zz"], "i2", "2024-03-01 00:00:00", candidates=["i1", "i2"])])
    assert flat == [0.0, 0.0]
    assert ranker.evaluate([_ex("new", [], "i2", "", candidates=["i1", "i2"])])["all_tied"] == 1


def test_history_longer_than_the_model_reads_uses_its_most_recent_items(trained):
    ranker, _ = trained
    long = [ITEMS[k % 12] for k in range(20)]  # ... i4, i5, i6, i7 -> i8
    short = long[-SMALL["max_seq_length"] :]
    a = ranker.scores([_ex("n", long, "i8", "2024-03-01 00:00:00")])
    b = ranker.scores([_ex("n", short, "i8", "2024-03-01 00:00:00")])
    assert torch.allclose(torch.tensor(a), torch.tensor(b))


def test_training_is_reproducible(trained, tmp_path: Path):
    ranker, _ = trained
    again = SASRecRanker({}, _walk_log(), SASRecConfig(**SMALL))
    again.fit()
    ex = [_ex("n", ["i1", "i2"], "i3", "2024-03-01 00:00:00")]
    assert torch.allclose(torch.tensor(ranker.scores(ex)), torch.tensor(again.scores(ex)), atol=1e-5)


def test_suite_adds_the_sasrec_row_when_asked(small_corpus, monkeypatch: pytest.MonkeyPatch):
    from zjulab.crs.suite import SuiteConfig, run_suite, tiny_factories

    pytest.importorskip("hopwise")
    cfg = SuiteConfig.tiny(tasks=("recommendation",), steps=2, sasrec=True, sasrec_epochs=3, device="cpu")
    rows = {(r.system, r.kind): r for r in run_suite(small_corpus, *tiny_factories(), config=cfg)}
    sas = rows[("SASRec (hopwise)", "baseline")]
    assert sas.n_test > 0 and 0.0 <= sas.metrics["hit@10"] <= 1.0 and len(rows) == 4


def test_suite_without_hopwise_skips_sasrec_unless_asked(small_corpus, monkeypatch: pytest.MonkeyPatch):
    from zjulab.crs.suite import SuiteConfig, run_suite, tiny_factories

    monkeypatch.setitem(sys.modules, "hopwise", None)
    monkeypatch.setattr("zjulab.crs.suite.available", lambda name: False)
    cfg = SuiteConfig.tiny(tasks=("recommendation",), steps=2, device="cpu")
    names = [r.system for r in run_suite(small_corpus, *tiny_factories(), config=cfg)]
    assert names == ["popularity", "attribute match", "bi-encoder"]
    with pytest.raises(MissingDependencyError, match=r"zjulab-crs\[sasrec\]"):
        run_suite(
            small_corpus, *tiny_factories(), config=SuiteConfig.tiny(tasks=("recommendation",), sasrec=True)
        )


def test_cli_eval_runs_the_sasrec_baseline_and_refuses_it_elsewhere(capsys: pytest.CaptureFixture):
    from zjulab.crs.cli import main

    assert main(["eval", "generation", "--baseline", "sasrec"]) != 0
    assert "recommendation baseline" in capsys.readouterr().err
    assert main(["eval", "recommendation", "--baseline", "popularity", "--checkpoint", "x"]) != 0
    pytest.importorskip("hopwise")
    assert (
        main(["eval", "recommendation", "--baseline", "sasrec", "--device", "cpu", "--sasrec-epochs", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "SASRecRanker" in out and "| all " in out


def test_evaluated_users_keep_no_behaviour_of_unknown_time_or_of_their_test_day_by_date_alone():
    """Review findings: a blank stamp or a date alone on the test day reached training."""
    log = [
        Behaviour("s", "a", "blank", ""),
        Behaviour("s", "a", "same-day", "2024-01-05"),
        Behaviour("s", "a", "day-before", "2024-01-04"),
        _b("a", "early", 5, 9),
        _b("a", "late", 5, 11),
        Behaviour("s", "b", "blank-b", ""),
    ]
    held = [_ex("a", [], "x", "2024-01-05 10:00:00")]
    seqs = SASRecRanker({}, log).sequences(exclude=held)
    assert seqs == {"a": ["day-before", "early"], "b": ["blank-b"]}  # b is not evaluated


def test_test_history_and_popularity_treat_a_date_alone_as_its_days_last_moment():
    from zjulab.crs.dialogue import happened_before, latest_time
    from zjulab.crs.recommendation import AttributeMatchRanker

    assert latest_time("2024-01-05") == "2024-01-05 23:59:59.999999"
    assert latest_time(" 2024-01-05T08:00 ") == "2024-01-05 08:00:00"
    assert not happened_before("2024-01-05", "2024-01-05 10:00:00")
    assert happened_before("2024-01-04", "2024-01-05 00:00:00")
    assert not happened_before("", "2024-01-05 10:00:00") and not happened_before("2024-01-04", "")
    pop = AttributeMatchRanker({}, [Behaviour("s", "u", "i", "2024-01-05"), _b("u", "i", 4)])
    assert pop.count_before("i", "2024-01-05 10:00:00") == 1
    assert pop.count_before("i", "2024-01-06 00:00:00") == 2


def test_empty_candidate_list_scores_nothing(trained):
    ranker, _ = trained
    assert ranker.scores([_ex("n", ["i1", "i2"], "i3", "2024-03-01 00:00:00", candidates=[])]) == [[]]


def test_the_first_fit_restores_what_importing_hopwise_changes():
    """Review finding: importing hopwise (first fit of a process) reseeded `random`, added
    warning filters and environment variables outside the confinement."""
    pytest.importorskip("hopwise")
    import subprocess
    import textwrap

    script = textwrap.dedent(
        """
        import os, random, sys, warnings
        sys.path[:0] = %r
        from zjulab.crs.config import SASRecConfig
        from zjulab.crs.dialogue import Behaviour
        from zjulab.crs.sequential import SASRecRanker
        log = [Behaviour("s", f"u{u}", f"i{(u + t) %% 5}", f"2024-01-0{1 + t} 00:00:00") for u in range(6) for t in range(4)]
        env, filters = dict(os.environ), list(warnings.filters)
        random.seed(7); expected = random.random(); random.seed(7)
        SASRecRanker({}, log, SASRecConfig(epochs=1, hidden_size=8, n_heads=1, inner_size=8, device="cpu")).fit()
        assert "hopwise" in sys.modules
        assert random.random() == expected, "random state"
        assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())
        assert warnings.filters == filters, "warning filters"
        print("ok")
        """
    ) % (sys.path,)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_scratch_directories_of_killed_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    from zjulab.crs import sequential

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"zjulab-crs-sasrec-{dead.pid}-abc"
    (stale / "data").mkdir(parents=True)
    live = tmp_path / f"zjulab-crs-sasrec-{os.getpid()}-def"
    live.mkdir()
    other = tmp_path / "zjulab-crs-sasrec-notapid-x"
    other.mkdir()
    user = tmp_path / "my-data"
    user.mkdir()
    sequential._remove_stale_scratch()
    assert not stale.exists() and live.exists() and other.exists() and user.exists()


def test_cli_rejects_a_non_positive_epoch_count_naming_the_flag(capsys: pytest.CaptureFixture):
    from zjulab.crs.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["eval", "recommendation", "--baseline", "sasrec", "--sasrec-epochs", "0"])
    assert stop.value.code == 2 and "--sasrec-epochs: must be >= 1, got 0" in capsys.readouterr().err
