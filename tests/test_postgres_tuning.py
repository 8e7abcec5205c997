"""Several ``skagegender tune`` workers on one study in a real PostgreSQL server.

The server is a real PostgreSQL started by ``pgserver`` (a PyPI wheel that bundles it) in a
temporary folder; the workers are separate ``python -m skagegender tune`` processes, started
at once on a fresh database (which used to fail: both created its tables together). Small
generated features keep each trial short.
"""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")
pgserver = pytest.importorskip("pgserver")
pytest.importorskip("psycopg")

from optuna.trial import TrialState
from sklearn.linear_model import Ridge

from skagegender.model_selection import HeadSearchCV

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

PASSWORD = "s3cret-Pa55"  # in every URL given to the workers; must never be printed
CV = 2
# With this seed the study's first trials are ordinal, MLP and LightGBM heads that each fit
# in well under a second on the data below (trial 9 is a large MLP: the tests stay below it).
SEED = "4"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pg")
    srv = pgserver.get_server(folder, cleanup_mode="delete")
    yield srv
    srv.cleanup()


_DATABASES = iter(range(1000))


@pytest.fixture
def storage(server):
    """A URL of a fresh database (no tables yet), with a password in it."""
    name = f"study{next(_DATABASES)}"
    server.psql(f"CREATE DATABASE {name};")
    uri = server.get_uri(name)  # postgresql://postgres:@/NAME?host=SOCKET_FOLDER
    assert uri.startswith("postgresql://postgres:@/")
    return uri.replace("postgresql://postgres:@", f"postgresql+psycopg://postgres:{PASSWORD}@")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 40
    X = rng.normal(size=(n, 5))
    path = tmp_path_factory.mktemp("features") / "F.npz"
    np.savez(path, X=X, age=np.clip(35 + 8 * X[:, 0] + rng.normal(scale=2, size=n), 1, 90),
             gender=np.where(X[:, 1] > 0, "male", "female"), groups=np.arange(n) // 2)
    return path


def _start(features, storage, n_trials, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = [sys.executable, "-m", "skagegender", "tune", "--features", str(features),
            "--target", "age", "--n-trials", str(n_trials), "--storage", storage, "--cv",
            str(CV), "--random-state", SEED, "--json", *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert PASSWORD not in out and PASSWORD not in err
    return proc.returncode, out, err


def _study(storage):
    return optuna.load_study(study_name="F-age", storage=storage)


def _check_trials(study, workers):
    """Every finished trial is whole: run by one of ``workers``, scored on every split."""
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    for trial in complete:
        assert trial.user_attrs["worker"].rsplit(":", 1)[1] in {str(p.pid) for p in workers}
        assert trial.params["head"] in ("mlp", "lightgbm", "ordinal")
        scores = trial.user_attrs["split_test_score"]
        assert len(scores) == CV and all(math.isfinite(s) for s in scores)
        assert trial.value == pytest.approx(np.mean(scores))
    return complete


def _check_report(out, study, n_trials):
    """A worker's JSON report: the study's own best, with n_trials finished trials."""
    report = json.loads(out)
    best = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert report["n_trials"] == n_trials
    assert report["best_score"] == best.value == study.best_value
    assert report["best_trial"] == best.number and report["best_trial_params"] == best.params
    assert report["storage"].startswith("postgresql+psycopg://postgres:***@/")


def test_workers_started_at_once_share_a_fresh_postgres_study(features, storage):
    n_trials = 6
    workers = [_start(features, storage, n_trials) for _ in range(3)]
    results = [_finish(proc) for proc in workers]
    for code, _, err in results:
        assert code == 0, err[-2000:]
        assert "duplicate key" not in err and "Traceback" not in err

    study = _study(storage)
    complete = _check_trials(study, workers)
    # exactly the trials asked for, in total; none left running, none more
    assert len(complete) == n_trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    not_run = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all("not_run" in t.user_attrs and not t.params for t in not_run)
    assert len({t.user_attrs["worker"] for t in complete}) >= 2  # the work was shared
    for _, out, _ in results:
        _check_report(out, study, n_trials)


def _running_trial_of(storage, pid):
    """The number of the RUNNING trial that process ``pid`` works on, or None."""
    try:
        trials = _study(storage).get_trials(states=(TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return None
    mine = [t.number for t in trials if t.user_attrs.get("worker", "").endswith(f":{pid}")]
    return mine[0] if mine else None


def test_a_worker_killed_mid_trial_leaves_it_failed_and_the_others_fill_the_study(
        features, storage):
    n_trials = 6
    # Heartbeat every second: the killed worker's trial is taken as dead after 6 s.
    survivor = _start(features, storage, n_trials, "--heartbeat", "1")
    victim = _start(features, storage, n_trials, "--heartbeat", "1")
    try:
        killed = None
        limit = time.monotonic() + 120  # bounds a broken run only
        while killed is None and victim.poll() is None and time.monotonic() < limit:
            if _running_trial_of(storage, victim.pid) is None:
                time.sleep(0.02)
                continue
            # Frozen, the victim can neither finish its trial nor start another: if the trial
            # is still RUNNING now, the kill lands in the middle of it.
            victim.send_signal(signal.SIGSTOP)
            killed = _running_trial_of(storage, victim.pid)
            if killed is None:
                victim.send_signal(signal.SIGCONT)
        assert killed is not None, "the victim finished before it could be killed mid-trial"
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert _study(storage).trials[killed].state == TrialState.RUNNING
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate()

    code, out, err = _finish(survivor)
    assert code == 0, err[-2000:]
    study = _study(storage)
    # the killed trial is marked failed, never counted; the survivor ran one in its place
    assert study.trials[killed].state == TrialState.FAIL
    assert study.trials[killed].value is None
    complete = _check_trials(study, [survivor, victim])
    assert len(complete) == n_trials and killed not in {t.number for t in complete}
    assert not study.get_trials(states=(TrialState.RUNNING,))
    _check_report(out, study, n_trials)


def _open_study_when_released(url, barrier, results):
    space = {"alpha": optuna.distributions.FloatDistribution(1e-3, 1e3, log=True)}
    search = HeadSearchCV(Ridge(), space, storage=url, study_name="s", n_trials=1)
    barrier.wait()
    try:
        search.open_study()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_processes_opening_a_fresh_sqlite_storage_at_once_all_succeed(tmp_path):
    # SQLite has the same race as PostgreSQL ("table ... already exists", a duplicate
    # alembic_version row): 3 processes released together failed in 5 of 5 tries.
    import multiprocessing

    context = multiprocessing.get_context("fork")  # the modules are imported already
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    barrier, results = context.Barrier(4), context.Queue()
    procs = [context.Process(target=_open_study_when_released, args=(url, barrier, results))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert outcomes == ["ok"] * 4
    assert _study_named(url, "s").user_attrs["skagegender_search"]["estimator"] == "Ridge"


def _study_named(url, name):
    return optuna.load_study(study_name=name, storage=url)


def test_a_trial_created_after_another_worker_took_the_last_slot_is_not_run(tmp_path,
                                                                           monkeypatch):
    # Another worker creates its trial between this worker's look at the study and the
    # creation of its own (simulated by wrapping Study.ask): this worker's trial is then
    # one too many; it must not run, and this worker waits for the other's trial.
    url = f"sqlite:///{tmp_path / 't.db'}"
    space = {"alpha": optuna.distributions.FloatDistribution(1e-3, 1e3, log=True)}
    search = HeadSearchCV(Ridge(), space, cv=2, n_trials=1, storage=url, study_name="s",
                          random_state=0)
    search.open_study()
    other = optuna.load_study(study_name="s", storage=url)
    original_ask = optuna.study.Study.ask
    taken = []

    def ask(study, *args, **kwargs):
        if not taken:
            taken.append(original_ask(other))  # RUNNING, numbered before this worker's
            # ... and that worker dies a second later, before finishing it
            threading.Timer(1.0, other.tell, (taken[0], None, TrialState.FAIL)).start()
        return original_ask(study, *args, **kwargs)

    monkeypatch.setattr(optuna.study.Study, "ask", ask)
    X = np.random.default_rng(0).normal(size=(30, 3))
    search.fit(X, X @ [1.0, 2.0, 3.0])

    trials = search.study_.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "another worker took the last one" in trials[1].user_attrs["not_run"]
    assert trials[1].params == {} and "worker" not in trials[1].user_attrs
    assert search.n_trials_ == 1 and search.best_index_ == 0
    assert trials[2].user_attrs["worker"].endswith(f":{os.getpid()}")
